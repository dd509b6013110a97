"""Detectors: a backbone plus heads (docs/detectors.md). Importing a module registers its detectors
(``rsdet.models.registry.register``); a new detector is its module plus one line here."""

from rsdet.models.detectors import cascade_rcnn, faster_rcnn, mask_rcnn, one_stage, solov2, yolact  # noqa: F401
