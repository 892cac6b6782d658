"""Model code shared by training and serving: tokenizer, network, artifact I/O."""
