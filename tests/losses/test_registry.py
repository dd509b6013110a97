"""The classification-loss registry: one call shape for every loss, and a new loss needs nothing else."""

import pytest
import torch
from omegaconf import OmegaConf
from torchvision.models.detection._utils import BoxCoder

from rsdet import losses as L
from rsdet.errors import ConfigError
from rsdet.losses import registry
from rsdet.models.criterion import Criterion
from rsdet.models.stage import StageOutput, StageSpec

RS = {"name": "rs", "cls": "rs", "delta": 0.5, "label": "iou", "box": "giou", "box_weight": 1.0, "weighting": "score",
      "delta_loc": None, "balance": "value", "box_normalizer": "weights", "stage_weights": {}, "prior_prob": None,
      "lr": 0.01, "test_score_thresh": 0.4, "default_sampler": {}, "rcnn": {}}
TERMS = {"rs": {"rank", "sort"}, "ap": {"cls"}, "alrp": {"cls"}, "focal": {"cls"}, "bce": {"cls"}, "ce": {"cls"}}


def _positives(softmax=False, want_grad_l1=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(10, 4 if softmax else 3, generator=g, requires_grad=True)
    classes = torch.tensor([0, -1, 2, -1, -1, 1, -1, -1, 2, -1])
    pos = torch.nonzero(classes >= 0).flatten()
    return L.StagePositives(logits, classes, pos, num_classes=3, iou_threshold=0.5,
                            box_losses=torch.rand(len(pos), generator=g) * 1.5,
                            labels=torch.tensor([0.9, 0.5, 0.7, 0.3]), want_grad_l1=want_grad_l1)


@pytest.fixture
def restore_registry():
    before = {name: dict(d) for name, d in (("LOSSES", registry.LOSSES), ("CLS_LOSSES", registry.CLS_LOSSES),
                                            ("CLASSIFIERS", registry.CLASSIFIERS))}
    yield
    for name, saved in before.items():
        d = getattr(registry, name)
        d.clear()
        d.update(saved)


def test_every_registered_loss_answers_the_one_call_shape():
    assert set(L.LOSSES) == set(TERMS) == set(L.CLS_LOSSES) == set(L.CLASSIFIERS)
    for name, loss in L.LOSSES.items():
        x = _positives(softmax=loss.classifier == "softmax")
        options = {"delta": 1.0, "focal_alpha": 0.25, "focal_gamma": 2.0}
        fn = loss.bind(OmegaConf.create(options))
        result = loss(fn, x)
        assert isinstance(result, L.ClassificationTerms) and set(result.terms) == TERMS[name], name
        assert (result.localisation is not None) == loss.needs_boxes == (name == "alrp")
        sum(result.terms.values()).backward()
        assert x.logits.grad.abs().sum() > 0, name


def test_adapters_compute_what_the_losses_compute_directly():
    x = _positives()
    rs = L.classification_loss("rs")
    result = rs(rs.bind(OmegaConf.create({"delta": 0.5})), x)
    targets = torch.zeros(10, 3)
    targets[x.pos, x.classes[x.pos]] = x.labels
    rank, sort = L.rank_sort_loss(x.logits, targets, delta=0.5)
    assert torch.equal(result.terms["rank"], rank) and torch.equal(result.terms["sort"], sort)
    assert result.grad_l1 is None
    assert rs(rs.bind(OmegaConf.create({"delta": 0.5})), _positives(want_grad_l1=True)).grad_l1 is not None
    focal = L.classification_loss("focal")
    value = focal(focal.bind(OmegaConf.create({"focal_alpha": 0.25, "focal_gamma": 2.0})), x).terms["cls"]
    binary = (targets > 0).float()
    assert torch.allclose(value, L.sigmoid_focal_loss(x.logits, binary, reduction="sum") / 4)
    ce = L.classification_loss("ce")
    xs = _positives(softmax=True)
    assert torch.equal(ce(ce.bind(None), xs).terms["cls"],
                       L.softmax_cross_entropy(xs.logits, torch.tensor([0, 3, 2, 3, 3, 1, 3, 3, 2, 3])))


def test_loss_properties_replace_the_name_checks():
    assert L.classification_loss("rs").uses_labels and not L.classification_loss("focal").uses_labels
    assert L.classification_loss("alrp").needs_boxes and L.classification_loss("alrp").balancer is not None
    assert {n for n, loss in L.LOSSES.items() if loss.positive_delta} == {"ap", "alrp"}
    assert L.classifier_of("ce") == "softmax" and L.classifier_of("rs") == "sigmoid"
    with pytest.raises(ConfigError, match=r"unknown classification loss 'hinge'; choose one of \['alrp', .*'rs'\]"):
        L.classification_loss("hinge")


def test_a_new_loss_is_one_registration_and_the_criterion_trains_it(restore_registry):
    def squared_hinge(logits, targets, margin=1.0):
        signs = torch.where(targets > 0, 1.0, -1.0)
        return (margin - signs * logits).clamp(min=0).pow(2).mean()

    @L.register_loss("hinge", squared_hinge, "sigmoid", options={"margin": "delta"})
    def _hinge(fn, x):
        return L.ClassificationTerms({"cls": fn(x.logits, x.sigmoid_targets())})

    with pytest.raises(ValueError, match="registered twice"):
        L.register_loss("hinge", squared_hinge, "sigmoid")(_hinge)
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(8, 2, generator=g) * 40
    ref = torch.cat([ref, ref + 12], 1)
    classes = torch.tensor([0, -1, 2, -1, 1, -1, -1, -2])
    spec = StageSpec("rcnn", 3)
    out = StageOutput(spec, torch.randn(8, 3, generator=g, requires_grad=True),
                      (torch.randn(8, 4, generator=g) * 0.1).requires_grad_(), ref,
                      ref + torch.randn(8, 4, generator=g), classes, BoxCoder((10.0, 10.0, 5.0, 5.0)),
                      torch.zeros(8, dtype=torch.long))
    crit = Criterion(OmegaConf.create(dict(RS, cls="hinge", delta=2.0, label="binary")), [spec])
    terms, _ = crit(out, 1)
    assert set(terms) == {"rcnn_cls", "rcnn_box"}
    keep = classes >= -1
    targets = torch.zeros(8, 3)
    targets[[0, 2, 4], [0, 2, 1]] = 1
    assert torch.allclose(terms["rcnn_cls"], squared_hinge(out.cls_logits[keep], targets[keep], margin=2.0))
    assert torch.allclose(terms["rcnn_box"], terms["rcnn_cls"])  # value self-balance, as for every loss
