"""Pictures of saywhy's results: heatmap overlays (matplotlib, imported only when drawing)."""
from saywhy.render.overlay import overlay_figure

__all__ = ["overlay_figure"]
