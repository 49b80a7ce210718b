"""Caffe2's ``caffe2.python.models``: model builders (``models.resnet``)."""
