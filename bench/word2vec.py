"""hfssl's skip-gram Word2Vec against gensim's (hand-tuned C) on the built-in corpus, same data and budget.

    pip install gensim   # benchmark-only extra
    python bench/word2vec.py [--epochs 5] [--repeats 3] [--threads 1]

Both train skip-gram with negative sampling on the same word sequences (the built-in corpus through hfssl's
word-level tokenizer, min_count 5): 100 dims, window 5 (dynamic), 5 negatives, subsampling 1e-3, learning rate
0.025 decaying linearly to 0.0001, the same epochs, the same number of threads (--threads, default torch's). hfssl
steps on 16 texts (about 2,500 pairs) at a time. Speed: corpus words x epochs / training seconds, the median of
repeats; the speed ratio is the median of the per-repeat ratios (each repeat runs both back to back). Quality: for a
fixed list of related word pairs of the Python docs (true/false, read/write, ...), the recall@10 and mean reciprocal
rank of each word among the cosine neighbours of the other.
Prints one JSON line.
"""

import argparse
import json
import math
import statistics
import sys
import time

import torch

from hfssl.collators.skip_gram import DataCollatorForSkipGram, count_token_ids
from hfssl.data.text import python_docs_corpus
from hfssl.data.tokenizer_training import train_word_level_tokenizer
from hfssl.models.word2vec import Word2VecConfig, Word2VecModel

RELATED_PAIRS = [
    ("true", "false"), ("int", "float"), ("list", "tuple"), ("read", "write"), ("open", "close"), ("get", "set"),
    ("start", "stop"), ("min", "max"), ("encode", "decode"), ("client", "server"), ("key", "value"),
    ("keys", "values"), ("input", "output"), ("upper", "lower"), ("first", "last"), ("begin", "end"),
    ("add", "remove"), ("append", "extend"), ("width", "height"), ("left", "right"), ("minimum", "maximum"),
    ("reader", "writer"), ("sin", "cos"), ("year", "month"), ("hours", "minutes"), ("seconds", "milliseconds"),
    ("file", "directory"), ("load", "dump"), ("loads", "dumps"), ("request", "response"), ("stdout", "stderr"),
    ("encoder", "decoder"), ("compress", "decompress"), ("acquire", "release"), ("thread", "process"),
    ("bytes", "str"), ("integer", "float"), ("row", "column"), ("send", "receive"), ("header", "body"),
    ("parent", "child"), ("dict", "set"), ("upper", "lowercase"), ("positive", "negative"), ("enable", "disable"),
    ("lock", "unlock"), ("username", "password"), ("import", "module"), ("class", "instance"), ("sqrt", "log"),
]


def neighbour_scores(vectors: torch.Tensor, vocab: dict[str, int], allowed: torch.Tensor) -> dict[str, float]:
    """Recall@10 and MRR of each pair word among the cosine neighbours of the other (both directions)."""
    vectors = torch.nn.functional.normalize(vectors.float(), dim=1)
    queries, answers = [], []
    for a, b in RELATED_PAIRS:
        if a in vocab and b in vocab:
            queries += [vocab[a], vocab[b]]
            answers += [vocab[b], vocab[a]]
    queries, answers = torch.tensor(queries), torch.tensor(answers)
    scores = (vectors[queries] @ vectors.T).masked_fill(~allowed[None, :], float("-inf"))
    scores[torch.arange(len(queries)), queries] = float("-inf")
    ranks = (scores > scores.gather(1, answers[:, None])).sum(1) + 1
    return {"recall_at_10": float((ranks <= 10).double().mean()), "mrr": float((1.0 / ranks).mean()),
            "num_queries": len(queries)}


def train_hfssl(rows, counts, epochs, threads, seed, batch_size=16):
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    model = Word2VecModel(Word2VecConfig(vocab_size=len(counts), embedding_dim=100))
    collator = DataCollatorForSkipGram(counts, window=5, num_negatives=5, subsample_threshold=1e-3, seed=seed)
    num_batches = epochs * math.ceil(len(rows) / batch_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.025)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(1 - step / num_batches, 0.0001 / 0.025))
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(rows), generator=generator).tolist()
        for index in range(0, len(rows), batch_size):
            batch = collator([rows[i] for i in order[index : index + batch_size]])
            loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return time.perf_counter() - start, model.word_vectors(normalize=False)


def train_gensim(sentences, vocab, vocab_size, epochs, threads, seed):
    from gensim.models import Word2Vec

    model = Word2Vec(vector_size=100, window=5, min_count=1, sg=1, hs=0, negative=5, sample=1e-3, alpha=0.025,
                     min_alpha=0.0001, workers=threads, seed=seed)
    model.build_vocab(sentences)
    start = time.perf_counter()
    model.train(sentences, total_examples=len(sentences), epochs=epochs)
    seconds = time.perf_counter() - start
    vectors = torch.zeros(vocab_size, 100)
    for word, index in vocab.items():
        if word in model.wv.key_to_index:
            vectors[index] = torch.from_numpy(model.wv[word].copy())
    return seconds, vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()

    texts = list(python_docs_corpus()["text"])
    tokenizer = train_word_level_tokenizer(texts, min_count=5)
    special = {tokenizer.pad_token_id, tokenizer.unk_token_id}
    rows = [ids for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    counts = count_token_ids(rows, len(tokenizer), ignore_ids=special)
    id_to_word = {index: word for word, index in tokenizer.get_vocab().items()}
    sentences = [[id_to_word[i] for i in row if i not in special] for row in rows]
    sentences = [sentence for sentence in sentences if sentence]
    words = sum(len(row) for row in rows)
    vocab = {word: index for word, index in tokenizer.get_vocab().items() if index not in special}
    allowed = counts > 0

    results = {"hfssl": [], "gensim": []}
    for repeat in range(args.repeats):
        for name, train in (("hfssl", lambda: train_hfssl(rows, counts, args.epochs, args.threads, repeat)),
                            ("gensim", lambda: train_gensim(sentences, vocab, len(counts), args.epochs, args.threads, repeat))):
            seconds, vectors = train()
            print(f"{name} repeat {repeat}: {seconds:.1f} s", file=sys.stderr)
            results[name].append({"words_per_second": words * args.epochs / seconds,
                                  **neighbour_scores(vectors, vocab, allowed)})

    def summary(name):
        runs = results[name]
        return {key: statistics.median(run[key] for run in runs) for key in ("words_per_second", "recall_at_10", "mrr")}

    hfssl, gensim = summary("hfssl"), summary("gensim")
    print(json.dumps({
        "benchmark": "word2vec_skipgram_python_docs",
        "corpus_words": words, "vocab_size": int(allowed.sum()), "epochs": args.epochs, "threads": args.threads,
        "repeats": args.repeats, "num_queries": results["hfssl"][0]["num_queries"],
        "hfssl": hfssl, "gensim": gensim,
        # Median over repeats of the ratio within each repeat (the two runs of a repeat are back to back).
        "speed_ratio_gensim_over_hfssl": statistics.median(
            g["words_per_second"] / h["words_per_second"] for h, g in zip(results["hfssl"], results["gensim"])),
        "recall_at_10_ratio_hfssl_over_gensim": hfssl["recall_at_10"] / max(gensim["recall_at_10"], 1e-9),
        "mrr_ratio_hfssl_over_gensim": hfssl["mrr"] / max(gensim["mrr"], 1e-9),
    }))


if __name__ == "__main__":
    main()
