"""Running a wrapper on images: loading, tiling, faces, CUDA graphs, ONNX, devices.

The tiling defaults live here, in a module without imports, so that the command parsers read them without
loading torch.
"""

#: Inputs of more pixels (H x W) than this are restored in tiles unless a tile size is given (``--tile-above``):
#: untiled, memory grows with the pixel count (SwinIR's window attention) and the plug-in's global attention costs
#: time with its square. Lower it for large hosts on small machines; it is also the input size of the face hosts,
#: which are never tiled.
AUTO_TILE_ABOVE = 512 * 512
#: Overlap of neighbouring tiles, input pixels (``--tile-overlap``); 32 as SwinIR's own tiled test. A plug-in's
#: attention spans the whole input, so its tiles see less context whatever the overlap.
TILE_OVERLAP = 32
