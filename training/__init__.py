"""Offline training: corpora -> tokenizer -> embedding + LSTM -> TorchScript artifact."""
