"""caffe2.python.modeling: initializers and parameter_info alias netjit.initializers."""
