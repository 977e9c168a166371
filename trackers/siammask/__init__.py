"""SiamMask (after foolwood/SiamMask; reference notes ``../shared/reference/trackers-and-got10k.md`` §3): the building
blocks of the tracker task.

* ``model``: the network — the adjusted ResNet of the shared registry (``networks.backbones``:
  ``resnet50_siammask``, ``resnet18_siammask``), depth-wise correlation heads (RPN, 63 × 63 mask), the refine module,
  ``SiamMask`` with ``template`` / ``track`` / ``refine`` / ``mask_at`` / ``forward``, and the exported graphs'
  wrappers (template, search, refine, mask);
* ``anchors``: anchors, the score-map grid (training: search-crop pixels; tracking: displacements from the crop
  centre), delta encoding / decoding, and the 127 × 127 windows of the locations;
* ``targets``: anchor labels, deltas and weights sampled with a seeded ``numpy.random.Generator``, mask weights, mask
  label windows;
* ``losses``: selected cross-entropy, weighted L1, soft-margin mask loss (base and sharp), their weighted sum.

Like ``trackers.siamfcpp``, every coordinate is continuous (``data/boxes.py``); ``anchors`` says where that differs
from the reference's pixel-index convention (its anchors sit 0.5 pixel lower, with its boxes).
"""
