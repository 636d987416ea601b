"""Learning side: optimizers, learners, replay buffers and the online training loop."""
