"""What tests share: fakes, queue and wait helpers, EMF readers, row builders (issue 16)."""
