"""caffe2.python: aliases of netjit modules (see caffe2/__init__.py)."""
