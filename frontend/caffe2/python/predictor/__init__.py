"""caffe2.python.predictor: predictor_exporter and mobile_exporter alias netjit modules."""
