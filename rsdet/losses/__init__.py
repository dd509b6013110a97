"""rsdet loss library — torch/torchvision (optional numba kernels on the CPU), no detector imports.

Ranking losses (exact, O(N log P + P^(4/3)), identity-update gradients):
    rank_sort_loss, ap_loss, alrp_loss, alrp_loc_loss, alrp_loc_errors, positive_ranks,
    ranking_gradient_l1
Score-based classification: sigmoid_focal_loss, binary_cross_entropy, softmax_cross_entropy
Box / mask: giou_loss, l1_loss, smooth_l1_loss, dice_coefficient, dice_loss
Continuous labels (Table S6): continuous_labels, box_iou_aligned, vectorise_targets
Instance weights (Eq. S18/S21): instance_weights, weighted_mean, centerness_weights,
    score_weights, iou_weights, ranking_weights
Task balancing (Eq. S17): build_task_balancer, ConstantBalance, ValueSelfBalance,
    MagnitudeSelfBalance, ALRPSelfBalance
Registry (one call shape per loss: adapter(fn, StagePositives) -> ClassificationTerms):
    LOSSES, register_loss, classification_loss, StagePositives, ClassificationTerms,
    build_cls_loss, classifier_of

See docs/losses.md for the algorithm and benchmark.
"""

from rsdet.losses._checks import LossInputError
from rsdet.losses.balance import (BALANCE_KINDS, ALRPSelfBalance, ConstantBalance,
                                  MagnitudeSelfBalance, TaskBalancer, ValueSelfBalance,
                                  build_task_balancer)
from rsdet.losses.box import dice_coefficient, dice_loss, giou_loss, l1_loss, smooth_l1_loss
from rsdet.losses.labels import LABEL_KINDS, box_iou_aligned, continuous_labels, vectorise_targets
from rsdet.losses.ranking import (ALRPOutput, RankSortOutput, alrp_loc_errors, alrp_loc_loss,
                                  alrp_loss, ap_loss, positive_ranks, rank_sort_loss,
                                  ranking_gradient_l1)
from rsdet.losses.registry import (CLASSIFIERS, CLS_LOSSES, LOSSES, ClassificationLoss, ClassificationTerms,
                                   StagePositives, build_cls_loss, classification_loss, classifier_of,
                                   register_loss)
from rsdet.losses.score import binary_cross_entropy, sigmoid_focal_loss, softmax_cross_entropy
from rsdet.losses.weighting import (WEIGHT_KINDS, centerness_weights, instance_weights,
                                    iou_weights, ranking_weights, score_weights, weighted_mean)

__all__ = [
    "rank_sort_loss", "ap_loss", "alrp_loss", "alrp_loc_loss", "alrp_loc_errors",
    "positive_ranks", "ranking_gradient_l1", "RankSortOutput", "ALRPOutput",
    "sigmoid_focal_loss", "binary_cross_entropy", "softmax_cross_entropy",
    "giou_loss", "l1_loss", "smooth_l1_loss", "dice_coefficient", "dice_loss",
    "continuous_labels", "box_iou_aligned", "vectorise_targets", "LABEL_KINDS",
    "instance_weights", "weighted_mean", "centerness_weights", "score_weights", "iou_weights",
    "ranking_weights", "WEIGHT_KINDS",
    "TaskBalancer", "ConstantBalance", "ValueSelfBalance", "MagnitudeSelfBalance",
    "ALRPSelfBalance", "build_task_balancer", "BALANCE_KINDS",
    "build_cls_loss", "CLS_LOSSES", "CLASSIFIERS", "classifier_of", "LossInputError",
    "LOSSES", "ClassificationLoss", "ClassificationTerms", "StagePositives", "classification_loss", "register_loss",
]
