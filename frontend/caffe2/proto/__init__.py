"""caffe2.proto: caffe2_pb2 and friends alias netjit.proto modules."""
