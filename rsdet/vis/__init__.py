"""Pictures of detections and annotations: drawing (:mod:`rsdet.vis.draw`), the dataset browser
(:mod:`rsdet.vis.browse`, ``rsdet data browse``) and the W&B media of an evaluation
(:mod:`rsdet.vis.wandb_media`). docs/visualisation.md describes them."""

from rsdet.vis.draw import class_colors, draw_detections, draw_instances, save_png, side_by_side, titled

__all__ = ["class_colors", "draw_detections", "draw_instances", "save_png", "side_by_side", "titled"]
