"""Caffe2's ``experiment_util``: a CSV training log (``ModelTrainerLog``) with pluggable external
loggers.

    from caffe2.python import experiment_util
    log = experiment_util.ModelTrainerLog("resnet_cifar", args)   # writes resnet_cifar_<time>.log here
    log.log(input_count=batch * i, batch_count=i, additional_values={"loss": loss, "accuracy": acc})

The file starts with ``# <runtime args>``, then a header line and one comma-separated line per call:
time_spent, cumulative_time_spent, input_count, cumulative_input_count, cumulative_batch_count,
inputs_per_sec, and the additional values in sorted key order.
"""
from __future__ import annotations

import abc
import datetime
import logging
import socket
import time
from collections import OrderedDict
from typing import Any, Sequence

log = logging.getLogger("experiment_logger")


class ExternalLogger(abc.ABC):
    """Receives the runtime arguments once and every log line as a dict."""

    @abc.abstractmethod
    def set_runtime_args(self, runtime_args: dict) -> None: ...

    @abc.abstractmethod
    def log(self, log_dict: dict) -> None: ...


class ModelTrainerLog:
    def __init__(self, expname: str, runtime_args: Any, external_loggers: Sequence[ExternalLogger] | None = None):
        now = datetime.datetime.fromtimestamp(time.time())
        self.experiment_id = f"{expname}_{now.strftime('%Y%m%d_%H%M%S')}"
        self.filename = f"{self.experiment_id}.log"
        self.logstr(f"# {runtime_args}")
        self.headers: list[str] | None = None
        self.start_time = self.last_time = time.time()
        self.last_input_count = 0
        self.external_loggers = list(external_loggers or [])
        if self.external_loggers:
            args = dict(runtime_args) if isinstance(runtime_args, dict) else dict(vars(runtime_args))
            args["experiment_id"] = self.experiment_id
            args["hostname"] = socket.gethostname()
            for logger in self.external_loggers:
                logger.set_runtime_args(args)

    def logstr(self, line: str) -> None:
        with open(self.filename, "a") as f:
            f.write(line + "\n")
        log.info(line)

    def log(self, input_count: int, batch_count: int, additional_values: dict) -> OrderedDict:
        now = time.time()
        delta_t = now - self.last_time
        delta_count = input_count - self.last_input_count
        self.last_time, self.last_input_count = now, input_count
        entry: OrderedDict[str, Any] = OrderedDict()
        entry["time_spent"] = delta_t
        entry["cumulative_time_spent"] = now - self.start_time
        entry["input_count"] = delta_count
        entry["cumulative_input_count"] = input_count
        entry["cumulative_batch_count"] = batch_count
        entry["inputs_per_sec"] = delta_count / delta_t if delta_t > 0 else 0.0
        for key in sorted(additional_values):
            entry[key] = additional_values[key]
        if self.headers is None:
            self.headers = list(entry)
            self.logstr(",".join(self.headers))
        self.logstr(",".join(str(v) for v in entry.values()))
        for logger in self.external_loggers:
            try:
                logger.log(entry)
            except Exception as err:   # a broken external logger must not stop training
                log.warning("Failed to call ExternalLogger %r: %s", logger, err)
        return entry
