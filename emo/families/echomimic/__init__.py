"""The EchoMimic family (antgroup/echomimic, Apache-2.0): V1 and its acc weights."""
