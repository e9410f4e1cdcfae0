"""The build step: released LITA checkpoints (HF, pretrained parts, .nemo) -> a served model repository."""

from lita_build.builder import BuildSummary, build
from lita_build.sources import SourceDescription, SourceLayout, describe_source

__all__ = ["BuildSummary", "SourceDescription", "SourceLayout", "build", "describe_source"]
