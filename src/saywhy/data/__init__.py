"""Data readers: CUB-200-2011 layout, captions, attributes given directly, synthbirds."""
