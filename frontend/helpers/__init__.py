"""``caffe2.python.helpers``: the layer helpers behind ``brew``, under Caffe2's module names.

Each submodule re-exports the functions netjit keeps in ``netjit.brew_helpers`` (one implementation;
``brew.<name>`` is the usual way to call them, with arg scopes merged)::

    >>> from caffe2.python.helpers.fc import fc
    >>> from netjit import brew_helpers
    >>> fc is brew_helpers.fc
    True
"""
