"""Full-text search over the served version's chunks in memory, ranked exactly as LanceDB ranks.

LanceDB's full-text search costs 10–15 ms of CPU per query at 100k chunks whatever it returns,
and hybrid search pays it on every request. The serving copy already holds each chunk's text,
so it also keeps an inverted index of it and answers keyword searches (and the keyword half of
hybrid ones) in about a millisecond.

The analysis and the scores are LanceDB's, measured against it (tests/serving/test_keywords.py
compares rankings and scores on the same table): the `simple` tokenizer (runs of letters and
digits), tokens of 40 bytes or more dropped, lower case, the Snowball English stemmer, English
stop words removed after stemming (so "downs" goes as "down" does), ASCII folding last; BM25 with
k1 = 1.2, b = 0.75, idf = ln(1 + (N − n + 0.5) / (n + 0.5)), document length counted after stop
words are removed (a text left with none is no document: N and the average length skip it),
every query term counted as often as it occurs, documents matching any term.
"""

import re
import threading
import unicodedata
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import Stemmer

K1 = 1.2
B = 0.75
MAX_TOKEN_BYTES = 40
# A word is dropped when its stem is one of these, as LanceDB's English stop-word filter (run
# after the stemmer) drops it: found by indexing every word of the Snowball and NLTK English
# stop lists into LanceDB and searching for each.
_STOP_STEM_WORDS = """
a about after again against ain all am an and are aren as at be been being below between
both but by can couldn d did didn do doesn doing don down each few for from further had hadn
has hasn have haven having he her here hers herself him himself his how i if in into is isn
it its itself just ll m ma me mightn more most mustn my myself needn no nor not now o of off
on or other our ours out over own re s same shan she should shouldn so some such t than that
the their theirs them then there these they this those through to too under until up ve was
wasn we were weren what when where which while who whom will with won wouldn y you your
yours yourself
"""
STOP_STEMS = frozenset(_STOP_STEM_WORDS.split())
# Letters NFKD leaves whole that ASCII folding still maps (œuvre matches oeuvre in LanceDB).
_FOLDED_LETTERS = str.maketrans(
    {"œ": "oe", "æ": "ae", "ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ı": "i"}
)
_TOKEN = re.compile(r"[^\W_]+")
# Words seen at query time are remembered up to this many (the corpus' own words always are).
QUERY_WORDS_REMEMBERED = 100_000
ROWS_PER_BLOCK = 8192


def _fold(term: str) -> str:
    if term.isascii():
        return term
    decomposed = unicodedata.normalize("NFKD", term.translate(_FOLDED_LETTERS))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


class Analyzer:
    """Text → index terms. Each distinct word is analysed once and remembered: a corpus has far
    fewer distinct words than words."""

    def __init__(self) -> None:
        self._stemmer = Stemmer.Stemmer("english")
        self._stemmer_lock = threading.Lock()  # PyStemmer objects are not thread-safe
        self._terms: dict[str, str | None] = {}

    def _term(self, word: str) -> str | None:
        if len(word.encode()) >= MAX_TOKEN_BYTES:
            return None
        with self._stemmer_lock:
            stem = self._stemmer.stemWord(word.lower())
        return None if stem in STOP_STEMS else _fold(stem)

    def terms(self, text: str, *, remember: bool = True) -> list[str]:
        known = self._terms
        found: list[str] = []
        for word in _TOKEN.findall(text):
            if word in known:
                term = known[word]
            else:
                term = self._term(word)
                if remember or len(known) < QUERY_WORDS_REMEMBERED:
                    known[word] = term
            if term is not None:
                found.append(term)
        return found


class KeywordIndex:
    """BM25 over a fixed list of texts; rows are the texts' positions."""

    def __init__(self, texts: Iterable[str | None], analyzer: Analyzer | None = None) -> None:
        self.analyzer = analyzer or Analyzer()
        term_ids: dict[str, int] = {}
        lengths = array("i")
        block_terms: list[np.ndarray] = []
        block_rows: list[np.ndarray] = []
        block_counts: list[np.ndarray] = []
        tokens = array("i")
        first_row = 0

        def end_block() -> None:
            # The block's (term, row) pairs with the term's count in the row: blocks keep the
            # transient arrays small whatever the corpus' size.
            nonlocal tokens, first_row
            rows_in_block = len(lengths) - first_row
            if tokens:
                token_rows = np.repeat(
                    np.arange(rows_in_block, dtype=np.int64),
                    np.frombuffer(lengths, dtype=np.int32)[first_row:],
                )
                keys = np.frombuffer(tokens, dtype=np.int32).astype(np.int64) * rows_in_block
                pairs, counts = np.unique(keys + token_rows, return_counts=True)
                block_terms.append((pairs // rows_in_block).astype(np.int32))
                block_rows.append((pairs % rows_in_block + first_row).astype(np.int32))
                block_counts.append(counts.astype(np.float32))
            tokens = array("i")
            first_row = len(lengths)

        for text in texts:
            terms = self.analyzer.terms(text or "")
            tokens.extend([term_ids.setdefault(term, len(term_ids)) for term in terms])
            lengths.append(len(terms))
            if len(lengths) - first_row == ROWS_PER_BLOCK:
                end_block()
        end_block()
        self.size = len(lengths)
        self.term_ids = term_ids
        posting_terms = np.concatenate([np.empty(0, np.int32), *block_terms])
        # Stable: within a term, rows stay in ascending order (blocks come in row order).
        order = np.argsort(posting_terms, kind="stable")
        self.rows = np.concatenate([np.empty(0, np.int32), *block_rows])[order]
        frequencies = np.concatenate([np.empty(0, np.float32), *block_counts])[order]
        self.starts = np.searchsorted(posting_terms[order], np.arange(len(term_ids) + 1))
        del posting_terms, order
        for blocks in (block_terms, block_rows, block_counts):
            blocks.clear()
        document_lengths = np.frombuffer(lengths, dtype=np.int32).astype(np.float32)
        # A text with no terms left after analysis is not a document to BM25 (as in LanceDB):
        # it counts neither in the idf's document count nor in the average length.
        self.documents = int(np.count_nonzero(document_lengths))
        average_length = float(document_lengths.sum()) / max(self.documents, 1)
        norms = K1 * (1 - B + B * document_lengths / max(average_length, 1e-9))
        # BM25's term-frequency part, per posting; a query multiplies in the term's idf.
        self.weights = (frequencies * (K1 + 1) / (frequencies + norms[self.rows])).astype(
            np.float32
        )
        # Each term's largest weight: what the term can add to any row, times its idf.
        self.max_weights = (
            np.maximum.reduceat(self.weights, self.starts[:-1])
            if len(self.weights)
            else np.empty(0, np.float32)
        )
        # Common terms (in more than an eighth of the rows) also get their weights laid out by
        # row, so pruned searches look a row up in one step: each costs 4 bytes per row, at
        # most four times the term's postings.
        self.common_weights: dict[int, np.ndarray] = {}
        for term_id in np.flatnonzero(np.diff(self.starts) > self.size // 8):
            start, end = self.starts[term_id], self.starts[term_id + 1]
            by_row = np.zeros(self.size, np.float32)
            by_row[self.rows[start:end]] = self.weights[start:end]
            self.common_weights[int(term_id)] = by_row

    @property
    def nbytes(self) -> int:
        common = sum(by_row.nbytes for by_row in self.common_weights.values())
        return int(self.rows.nbytes + self.weights.nbytes + self.starts.nbytes + common)

    def idf(self, postings: int) -> float:
        return float(np.log(1 + (self.documents - postings + 0.5) / (postings + 0.5)))

    def search(
        self, text: str, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and rows of the k best-scoring rows, best first (ties by row); `allowed`: a
        boolean mask over rows a hit must be in."""
        postings: list[_Postings] = []
        for term, times in Counter(self.analyzer.terms(text, remember=False)).items():
            term_id = self.term_ids.get(term)
            if term_id is None:
                continue
            start, end = int(self.starts[term_id]), int(self.starts[term_id + 1])
            scale = self.idf(end - start) * times
            postings.append(
                _Postings(
                    term_id,
                    scale,
                    self.rows[start:end],
                    self.weights[start:end],
                    float(self.max_weights[term_id]) * scale,
                )
            )
        if not postings:
            return np.empty(0, dtype=np.float32), np.empty(0, dtype=np.int64)
        found = self._search_pruned(postings, k, allowed)
        if found is None:
            found = self._search_every_match(postings, allowed)
        return _best(*found, k)

    def _search_every_match(
        self, postings: list["_Postings"], allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows matching any term and their scores."""
        rows = np.concatenate([term.rows for term in postings])
        weights = np.concatenate([term.contributions for term in postings])
        if len(postings) == 1:
            matched, scores = rows.astype(np.int64), weights
        elif len(rows) > self.size // 8:  # common terms: one pass over every row is cheaper
            totals = np.bincount(rows, weights=weights, minlength=self.size)
            matched = np.flatnonzero(totals)
            scores = totals[matched]
        else:
            matched, positions = np.unique(rows, return_inverse=True)
            scores = np.bincount(positions, weights=weights)
        if allowed is not None:
            keep = allowed[matched]
            matched, scores = matched[keep], scores[keep]
        return scores, matched

    def _search_pruned(
        self, postings: list["_Postings"], k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The top-k candidates without visiting the postings of common terms (MaxScore): rows
        the rarer terms match are scored exactly, looking the common terms up for those rows
        only; a row only common terms match scores at most the sum of their bounds, so when
        that sum is below the k-th score found, no such row can make the top k. None when
        pruning cannot decide."""
        common = [term for term in postings if term.term_id in self.common_weights]
        rare = [term for term in postings if term.term_id not in self.common_weights]
        if not common or not rare:
            return None
        rows = np.concatenate([term.rows for term in rare])
        # Each term's rows are ascending: a stable sort of their concatenation is a merge.
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        firsts = np.flatnonzero(np.diff(rows, prepend=-1))
        matched = rows[firsts].astype(np.int64)
        weights = np.concatenate([term.contributions for term in rare])[order]
        scores = np.add.reduceat(weights.astype(np.float64), firsts)
        if allowed is not None:
            keep = allowed[matched]
            matched, scores = matched[keep], scores[keep]
        if len(matched) < k:
            return None
        for term in common:
            scores += self.common_weights[term.term_id][matched] * term.scale
        best = np.argpartition(-scores, k - 1)[:k]
        scores, matched = scores[best], matched[best]
        # The margin covers the bounds' float32 rounding.
        if sum(term.bound for term in common) * (1 + 1e-6) >= scores.min():
            return None
        return scores, matched


@dataclass(frozen=True)
class _Postings:
    """One query term's rows (ascending) and their weights; the term adds weight × scale (its
    idf and how often the query has it) to a row's score, `bound` at most."""

    term_id: int
    scale: float
    rows: np.ndarray
    weights: np.ndarray
    bound: float

    @property
    def contributions(self) -> np.ndarray:
        return self.weights * self.scale


def _best(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if len(rows) > k:
        best = np.argpartition(-scores, k - 1)[:k]
        rows, scores = rows[best], scores[best]
    order = np.lexsort((rows, -scores))
    return scores[order].astype(np.float32), rows[order].astype(np.int64)
