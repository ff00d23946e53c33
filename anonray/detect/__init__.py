"""Detection: one module per detector family (CenterFace faces, YOLO plates, the low-light look), the
letterbox and NMS maths they share, the model manifest, and ``frame_detector.FrameDetector`` on top.

How input sizes work: each class resizes internally to its own ``config.detection.<cls>.input_size`` (long
side). Faces are never upscaled past the image they are given (CenterFace is multi-scale and an upscale only
costs time); plates are letterboxed as ultralytics does towards the full input size, upscaling small images
(``detection.plate.upscale``) at most ``detection.plate.max_upscale`` times (2: a 480x270 frame to 960, not
1280), which gives tighter boxes on small frames than the frame's own size at a quarter of the full upscale's cost.
Plates also get a look at the frame shrunk to ``detection.plate.coarse_input_size`` (``coarse.py``, 320 by default):
close-ups.
"""
