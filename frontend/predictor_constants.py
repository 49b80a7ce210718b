"""``caffe2.python.predictor_constants``: the reserved blob names and MetaNetDef map keys.

Every field of ``PredictorConsts`` defaults to its value, so one default instance is the table.

>>> predictor_constants.META_NET_DEF
'!!META_NET_DEF'
"""
from __future__ import annotations

from netjit.proto import predictor_consts_pb2

predictor_constants = predictor_consts_pb2.PredictorConsts()

__all__ = ["predictor_constants"]
