"""Image constants shared by training, evaluation and deployment (this module imports nothing, so the torch-free
ONNX Runtime side can use it too)."""

# Files read as images, by suffix (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
# ImageNet per-channel RGB statistics in [0, 1] pixel units (the `imagenet_static` normalisation).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
