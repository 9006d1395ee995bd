"""Exports in TF Serving layout (``saved_models/<name>/<version>/``) and loading them back."""

from exports.export import export_savedmodel, next_version
from exports.load import LoadedExport, load_export, resolve_export

__all__ = ["LoadedExport", "export_savedmodel", "load_export", "next_version", "resolve_export"]
