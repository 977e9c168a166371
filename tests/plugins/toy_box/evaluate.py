"""The toy task's evaluator, a plugin named by its dotted path (``"type": "toy_box.evaluate"``): mean IoU of the
predicted boxes on held-out images."""

import numpy as np
import torch

from toy_box.task import box_iou, square_images


def run_eval(params, model, device, writer=None, global_step=0):
    images, boxes = square_images(32, params.img_size, seed=params.seed + 1000)
    with torch.no_grad():
        predicted = model(torch.from_numpy(images).to(device)).float().cpu().numpy()
    return {"mean_iou": float(np.mean(box_iou(predicted, boxes)))}, "mean_iou"
