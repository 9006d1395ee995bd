"""What an audit leaves: the JSON, a page a person can scan (each finding's images side by side), and the
terminal's summary with the next command."""

from __future__ import annotations

import base64
import html
import io
import json
import os

import numpy as np
from PIL import Image

SHOWN = 100  # findings of each kind pictured on the page; the JSON has them all
THUMB = 96


def public(findings: dict) -> dict:
    """The findings as the JSON holds them: no arrays, no row indices."""
    out = {key: value for key, value in findings.items() if not key.startswith("_")}
    for key in ("label_issues", "image_issues", "duplicates"):
        out[key] = [{k: v for k, v in item.items() if k not in ("index", "members")} for item in out[key]]
    return out


def write_json(findings: dict, path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(public(findings), f, indent=1)
    return path


def _picture(images, index) -> str:
    array = np.asarray(images[index], np.uint8)
    picture = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    scale = max(1, THUMB // max(picture.size))
    picture = picture.resize((picture.size[0] * scale, picture.size[1] * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"


def _figure(images, index, caption) -> str:
    return (f'<figure><img src="{_picture(images, index)}" width="{THUMB}" height="{THUMB}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def write_html(findings: dict, path: str) -> str:
    images = findings["_images"]
    names = {}
    for item in findings["label_issues"] + findings["image_issues"]:
        if item.get("index") is not None:
            names[item["file"]] = item["index"]
    parts = [f"<h1>Audit of {html.escape(findings['dataset'])}</h1>",
             f"<p>{findings['images']} images, {len(findings['class_names'])} classes; features: "
             f"{html.escape(findings['features'])}. Nothing in the folder was changed.</p>"]
    parts.append(f"<h2>Likely mislabeled ({len(findings['label_issues'])})</h2><div class=row>")
    for item in findings["label_issues"][:SHOWN]:
        parts.append(_figure(images, item["index"], f"{item['file']}: given {item['given']}, looks like "
                                                     f"{item['suggested']} (p={item['score']:.3f})"))
    parts.append("</div>")
    for title, groups in (("Copies", findings["duplicates"]), ("Leaks across the split", findings["leaks"])):
        parts.append(f"<h2>{title} ({len(groups)})</h2>")
        for group in groups[:SHOWN]:
            members = group.get("members") or [None] * len(group["files"])
            parts.append(f"<div class=group><b>{group['kind']}</b>")
            for member, file, label, split in zip(members, group["files"], group["labels"], group["splits"]):
                if member is None:
                    member = next(d["members"][d["files"].index(file)] for d in findings["duplicates"]
                                  if file in d["files"])
                parts.append(_figure(images, member, f"{file} ({label}, {split})"))
            parts.append("</div>")
    shown = [item for item in findings["image_issues"] if item["index"] is not None]
    parts.append(f"<h2>Unusable images ({len(findings['image_issues'])})</h2><div class=row>")
    for item in shown[:SHOWN]:
        parts.append(_figure(images, item["index"], f"{item['file']}: {item['issue']}"))
    parts.append("</div><ul>")
    for item in findings["image_issues"]:
        if item["index"] is None:
            parts.append(f"<li>{html.escape(item['file'])}: {html.escape(item['issue'])}</li>")
    parts.append("</ul>")
    balance = findings["class_balance"]
    parts.append(f"<h2>Class balance</h2><p>largest / smallest class: {balance['largest_over_smallest']}; "
                 f"{html.escape(balance['advice'])}</p><table><tr><th>class</th><th>images</th><th>weight</th></tr>")
    for name, count in balance["counts"].items():
        parts.append(f"<tr><td>{html.escape(name)}</td><td>{count}</td><td>{balance['class_weight'][name]}</td></tr>")
    parts.append("</table>")
    style = ("<style>body{font-family:sans-serif;margin:2em} figure{display:inline-block;margin:4px;width:150px;"
             "vertical-align:top;font-size:11px;word-wrap:break-word} img{image-rendering:pixelated;"
             "border:1px solid #ccc} .group{border-bottom:1px solid #eee;padding:4px}</style>")
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"<!doctype html><meta charset=utf-8><title>Audit</title>{style}{''.join(parts)}")
    return path


def summary(findings: dict, json_path: str, html_path: str, exclude_path: str) -> list[str]:
    """At most a screen: what was found, the worst few, where the rest is, and the next command."""
    lines = [f"Audited {findings['dataset']}: {findings['images']} images, {len(findings['class_names'])} "
             f"classes, in {findings['seconds']:.0f} s (features: {findings['features']}; out-of-sample accuracy "
             f"{findings['out_of_sample_accuracy']:.3f})"]
    issues = findings["label_issues"]
    lines.append(f"  Likely mislabeled: {len(issues)}")
    for item in issues[:5]:
        lines.append(f"    {item['file']}: given {item['given']}, looks like {item['suggested']} "
                     f"(p={item['score']:.3f})")
    dupes = findings["duplicates"]
    exact = sum(group["kind"] == "exact" for group in dupes)
    across = sum(group["across_classes"] for group in dupes)
    lines.append(f"  Copies: {exact} groups of exact copies, {len(dupes) - exact} of near copies; {across} under "
                 f"two or more labels")
    lines.append(f"  Leaks across train/val/test: {len(findings['leaks'])}"
                 + (" (copies in two splits inflate the test score)" if findings["leaks"] else ""))
    kinds = {}
    for item in findings["image_issues"]:
        kind = item["issue"].split(" (")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    listed = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items(), key=lambda kv: -kv[1]))
    lines.append(f"  Unusable images: {len(findings['image_issues'])}" + (f" ({listed})" if listed else ""))
    balance = findings["class_balance"]
    lines.append(f"  Class balance: largest / smallest {balance['largest_over_smallest']}; {balance['advice']}")
    lines.append(f"Report: {html_path}  JSON: {json_path}  (no file of the dataset was changed)")
    if findings["exclude"] and findings["root"]:
        lines.append(f"next: python train.py --dataset {findings['dataset']} --exclude {exclude_path}   "
                     f"# trains without the {len(findings['exclude'])} files flagged; look at the report first")
    else:
        lines.append(f"next: python train.py --dataset {findings['dataset']}")
    return lines
