"""Tokenizer and network: normalisation, round trip, padding invariance, scripting."""

from __future__ import annotations

import csv

import pytest
import torch

from model.network import POOLINGS, NetworkConfig, SentimentLSTM
from model.tokenizer import PAD_ID, UNK_ID, load_tokenizer, pad, token_ids, train_tokenizer


@pytest.fixture(scope="module")
def sst_tokenizer(data_mirror):
    with open(data_mirror / "sst2/sentences/train.tsv", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    return train_tokenizer([r[0] for r in rows], max_length=32)


def tokens(tok, text: str) -> list[str]:
    return tok.encode(text, add_special_tokens=False).tokens


@pytest.mark.parametrize(
    ("user", "sst"),
    [
        ("I don't like it!!", "i do n't like it ! !"),
        ("Great!!", "great ! !"),
        ("It's a film's charm, isn't it?", "it 's a film 's charm , is n't it ?"),
        ("I can't and won't.", "i ca n't and wo n't ."),
        ("Wonderful<br />Terrible", "wonderful terrible"),
        ("\u201cFun\u201d (really)", '" fun " -lrb- really -rrb-'),
        ("THE BEST", "the best"),
    ],
)
def test_user_spelling_and_sst_tokenisation_give_the_same_tokens(sst_tokenizer, user, sst):
    assert tokens(sst_tokenizer, user) == tokens(sst_tokenizer, sst)


def test_special_ids_and_unknown_words(sst_tokenizer):
    assert sst_tokenizer.token_to_id("[PAD]") == PAD_ID
    assert sst_tokenizer.token_to_id("[UNK]") == UNK_ID
    ids = sst_tokenizer.encode("zzqxv good", add_special_tokens=False).ids
    assert ids[0] == UNK_ID and ids[1] not in (PAD_ID, UNK_ID)


def test_round_trip_through_file(sst_tokenizer, tmp_path, data_mirror):
    path = tmp_path / "tokenizer.json"
    sst_tokenizer.save(str(path))
    loaded = load_tokenizer(path)
    with open(data_mirror / "sst2/sentences/dev.tsv", encoding="utf-8") as f:
        texts = [r[0] for r in list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:50]]
    assert token_ids(loaded, texts) == token_ids(sst_tokenizer, texts)
    # decoding the ids gives back the words (unknowns aside)
    enc = loaded.encode(texts[0], add_special_tokens=False)
    assert [loaded.id_to_token(i) for i in enc.ids] == enc.tokens


def test_truncation_is_reported(sst_tokenizer):
    long_text = " ".join(["good"] * 100)
    ids, truncated = token_ids(sst_tokenizer, [long_text, "good"])
    assert truncated == [True, False]
    assert pad(ids)[1].tolist() == [32, 1]


def test_empty_text_becomes_one_unknown_token(sst_tokenizer):
    ids, truncated = token_ids(sst_tokenizer, ["", "   "])
    assert ids == [[UNK_ID], [UNK_ID]] and truncated == [False, False]


def test_load_tokenizer_rejects_wrong_special_ids(tmp_path):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    bad = Tokenizer(WordLevel({"hello": 0, "[UNK]": 1, "[PAD]": 2}, unk_token="[UNK]"))
    bad.save(str(tmp_path / "t.json"))
    with pytest.raises(ValueError, match=r"t\.json"):
        load_tokenizer(tmp_path / "t.json")


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("padded", [True, False])  # batches on the padded path / as chosen by cost
def test_padding_does_not_change_logits(pooling, bidirectional, padded):
    torch.manual_seed(0)
    model = SentimentLSTM(
        NetworkConfig(
            vocab_size=100,
            embed_dim=16,
            hidden_dim=12,
            num_layers=2,
            pooling=pooling,
            bidirectional=bidirectional,
        )
    ).eval()
    if padded:
        model.padded_min_batch, model.padded_min_fill = 1, 0.0
    seqs = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14], [15, 16, 17, 18]]
    ids, lengths = pad(seqs)
    with torch.no_grad():
        batched = model(ids, lengths)
        alone = torch.cat([model(*pad([s])) for s in seqs])
        # extra padding columns beyond the longest text change nothing either
        wider = torch.cat([ids, torch.zeros(4, 5, dtype=torch.long)], dim=1)
        widened = model(wider, lengths)
    torch.testing.assert_close(batched, alone, rtol=0, atol=1e-6)
    torch.testing.assert_close(batched, widened, rtol=0, atol=1e-6)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("padded", [True, False])
def test_padded_encoding_equals_the_lstm_on_packed_sequences(layers, padded):
    # The model runs nn.LSTM's weights on padded (and per-text reversed) input for speed; at real
    # steps that must be exactly what the module computes on packed sequences.
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.manual_seed(0)
    model = SentimentLSTM(
        NetworkConfig(vocab_size=100, embed_dim=16, hidden_dim=12, num_layers=layers)
    ).eval()
    ids, lengths = pad([[5, 6, 7, 8, 9, 10, 11], [12, 13], [14], [15, 16, 17, 18]])
    with torch.no_grad():
        emb = model.embedding(ids)
        ours = model.encode(emb, lengths)
        packed = pack_padded_sequence(emb, lengths, batch_first=True, enforce_sorted=False)
        reference, _ = pad_packed_sequence(model.lstm(packed)[0], batch_first=True)
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(ours[b, :n], reference[b, :n], rtol=0, atol=1e-6)


def test_ngram_bag_is_padding_invariant_and_scripts(tmp_path):
    torch.manual_seed(0)
    model = SentimentLSTM(NetworkConfig(vocab_size=100, embed_dim=8, hidden_dim=8, ngram_buckets=64)).eval()
    torch.nn.init.normal_(model.ngrams.weight)
    model.ngram_weight.fill_(1.5)
    seqs = [[5, 6, 7, 8, 9], [12, 13], [14]]
    ids, lengths = pad(seqs)
    with torch.no_grad():
        batched = model(ids, lengths)
        alone = torch.cat([model(*pad([s])) for s in seqs])
        bag_only = model.ngram_logits(ids, lengths)
        model.ngram_weight.zero_()
        lstm_only = model(ids, lengths)
        model.ngram_weight.fill_(1.5)
    torch.testing.assert_close(batched, alone, rtol=0, atol=1e-6)
    torch.testing.assert_close(batched, lstm_only + 1.5 * bag_only, rtol=0, atol=1e-6)
    # a bigram is hashed from neighbouring tokens: order matters to the bag, not only the words
    with torch.no_grad():
        swapped = model.ngram_logits(*pad([[6, 5, 7, 8, 9]]))
    assert not torch.allclose(swapped, bag_only[:1])
    scripted = torch.jit.script(model)
    scripted.save(str(tmp_path / "m.pt"))
    with torch.no_grad():
        torch.testing.assert_close(
            torch.jit.load(str(tmp_path / "m.pt"))(ids, lengths), batched, rtol=0, atol=1e-6
        )


def test_scripted_model_matches_eager_and_survives_save_load(tmp_path):
    torch.manual_seed(0)
    model = SentimentLSTM(NetworkConfig(vocab_size=50, embed_dim=8, hidden_dim=8)).eval()
    scripted = torch.jit.script(model)
    scripted.save(str(tmp_path / "m.pt"))
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    ids, lengths = pad([[2, 3, 4], [5]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, lengths), model(ids, lengths), rtol=0, atol=1e-6)


def test_unknown_pooling_is_refused():
    with pytest.raises(ValueError, match="pooling"):
        SentimentLSTM(NetworkConfig(vocab_size=10, pooling="attention"))
