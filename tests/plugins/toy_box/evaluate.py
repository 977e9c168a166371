"""The toy task's evaluator, a plugin named by its dotted path (``"type": "toy_box.evaluate"``): mean IoU of the
predicted boxes on held-out images."""

import numpy as np

from toy_box.task import box_iou, square_images


def run_eval(params, predictor, device, writer=None, global_step=0):
    """`predictor` is what the task hands its evaluators (`toy_box.task.BoxPredictor`)."""
    images, boxes = square_images(32, params.img_size, seed=params.seed + 1000)
    return {"mean_iou": float(np.mean(box_iou(predictor(images), boxes)))}, "mean_iou"
