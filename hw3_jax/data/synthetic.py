"""An embedded, generated movie-review set whose labels depend on word order.

Every review is made of neutral sentences (plot, runtime, who I saw it with; some with a
"not" that negates nothing) and one or two opinion sentences built from a realistic sentiment
vocabulary (~120 adjectives, verbs such as "loved"/"hated", phrases such as "a masterpiece" /
"a waste of time", intensifiers). The label is a deterministic function of the text that a
left-to-right reader can compute:

* an opinion *clause* has one sentiment word; its polarity is the word's polarity, flipped
  when the clause is negated ("not good", "wasn't bad at all", "I didn't enjoy it",
  "far from a masterpiece", "neither funny nor clever");
* an opinion *sentence* is one clause, a contrast ("A but B", "A. However, B", "A at first,
  but B": the clause after the connector decides) or a concession ("Although A, B" /
  "B, even though A": the main clause B decides, the subordinate clause never does);
* the label (1 = positive) is the polarity of the review's last opinion sentence (when there
  are two, the last one opens with a verdict such as "Overall,").

A bag of words learns little: negation is drawn independently of the label, so a sentiment
word says nothing by itself about a negated clause, and the clauses that do not decide carry
random (`balance_prob`: exactly balanced) sentiment words. A CountVectorizer + logistic
regression reaches about 64% test accuracy with the defaults (tests check <= 80%). Sequence
models learn it, but only with enough distinct reviews: a 2-layer, 64-wide encoder + BiGRU
trained from scratch on 17,500 reviews reached 98.6% test accuracy after 4 epochs (2 CPU cores,
about 2 minutes), while on 7,000 reviews it memorised them and stayed near 75%. Prefer more
reviews to more epochs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hw3_jax.data.errors import DataError
from hw3_jax.data.imdb import RawDataset, TextSplit

VERSION = 1  # bump when the generated texts change (the token cache keys on it)

POSITIVE_ADJECTIVES = (
    "good", "great", "excellent", "wonderful", "brilliant", "superb", "fantastic", "amazing",
    "outstanding", "terrific", "marvelous", "delightful", "beautiful", "gorgeous", "stunning",
    "charming", "moving", "touching", "gripping", "riveting", "engaging", "compelling",
    "captivating", "thrilling", "exciting", "entertaining", "enjoyable", "fun", "funny",
    "hilarious", "witty", "clever", "smart", "fresh", "original", "inventive", "imaginative",
    "powerful", "memorable", "impressive", "remarkable", "masterful", "flawless", "perfect",
    "solid", "strong", "heartfelt", "heartwarming", "inspiring", "refreshing", "satisfying",
    "lovely", "magnificent", "sublime", "spectacular", "nice", "fascinating", "believable",
)
NEGATIVE_ADJECTIVES = (
    "bad", "terrible", "awful", "horrible", "dreadful", "boring", "dull", "tedious", "pointless",
    "lame", "weak", "poor", "mediocre", "forgettable", "predictable", "cliched", "stale", "bland",
    "flat", "lifeless", "wooden", "stiff", "clumsy", "sloppy", "messy", "confusing",
    "incoherent", "silly", "stupid", "dumb", "ridiculous", "laughable", "painful", "unbearable",
    "annoying", "irritating", "disappointing", "overrated", "overlong", "slow", "shallow",
    "empty", "hollow", "pretentious", "tiresome", "uninspired", "unoriginal", "derivative",
    "cheap", "ugly", "awkward", "atrocious", "abysmal", "embarrassing", "insufferable",
    "amateurish", "unconvincing", "nonsensical",
)
# Verbs: (past, base) pairs, "I loved it" / "I did not love it".
POSITIVE_VERBS = (
    ("loved", "love"), ("enjoyed", "enjoy"), ("liked", "like"), ("adored", "adore"),
    ("admired", "admire"), ("appreciated", "appreciate"), ("treasured", "treasure"),
)
NEGATIVE_VERBS = (
    ("hated", "hate"), ("disliked", "dislike"), ("despised", "despise"), ("loathed", "loathe"),
    ("detested", "detest"), ("resented", "resent"), ("regretted watching", "regret watching"),
)
# Noun phrases predicated of the whole film: "it was a masterpiece" / "it wasn't a disaster".
POSITIVE_NOUN_PHRASES = (
    "a masterpiece", "a gem", "a delight", "a triumph", "a treat", "a pleasure to watch",
    "a joy", "worth watching", "worth every minute", "a classic", "a must see",
)
NEGATIVE_NOUN_PHRASES = (
    "a waste of time", "a disaster", "a mess", "a letdown", "a disappointment",
    "a chore to sit through", "a failure", "a bore", "a waste of money", "a trainwreck",
    "a slog",
)
INTENSIFIERS = (
    "very", "really", "truly", "quite", "extremely", "incredibly", "genuinely", "absolutely",
    "thoroughly", "remarkably", "so", "pretty", "rather", "utterly", "just",
)
WHOLE_FILM = (
    "the movie", "the film", "this movie", "this film", "the picture", "the sequel",
    "this flick", "the whole thing", "it", "the remake", "this adaptation",
)
ASPECTS = (
    "the acting", "the cast", "the plot", "the story", "the script", "the dialogue",
    "the direction", "the soundtrack", "the score", "the cinematography", "the visuals",
    "the ending", "the pacing", "the characters", "the performances", "the lead actor",
    "the lead actress", "the villain", "the special effects", "the editing", "the humor",
    "the first half", "the second half", "the climax", "the premise", "the screenplay",
    "the camera work", "the music", "the costumes", "the finale", "the supporting cast",
    "the final act", "the opening scene", "the action scenes", "the romance", "the twist",
    "the writing", "the production design", "the fight scenes", "the jokes",
)
PLURAL = {
    "the characters", "the performances", "the visuals", "the special effects",
    "the costumes", "the action scenes", "the fight scenes", "the jokes",
}

OPINION_PREFIXES = ("", "", "", "", "Honestly, ", "To be honest, ", "I think ", "Frankly, ",
                    "In my opinion, ", "I have to say ")
VERDICT_PREFIXES = ("Overall, ", "All in all, ", "In the end, ", "Bottom line: ", "In short, ",
                    "To sum up, ", "Overall ", "All things considered, ")
# Contrast connectors: the clause after them decides.
CONTRAST = (" but", ", but", ", yet", ". However,", "; however,", ", but in the end",
            ", but overall", ". Still,", ". That said,", ", and yet", ". But")
# Concessions: the subordinate clause (after the conjunction) never decides.
CONCESSIVE = ("although", "even though", "though", "even if", "while")

_WHEN = ("last weekend", "on a Sunday afternoon", "on a plane", "at a festival", "last night",
         "yesterday", "on opening night", "over the holidays", "a few years ago", "last month")
_WHOM = ("my brother", "my sister", "a friend", "my parents", "my kids", "my wife",
         "my husband", "some coworkers", "my roommate", "my grandfather", "a date")
_SOURCE = ("a novel", "a true story", "a comic book", "a play", "a video game",
           "a short story", "an old television series", "a newspaper article")
_PLACE = ("Paris", "New York", "a small town in Texas", "London", "space", "a remote island",
          "Tokyo", "the nineteenth century", "Berlin", "a boarding school", "the desert",
          "a submarine", "the near future")
_WHO = ("a young detective", "a retired soldier", "two sisters", "a small-town teacher",
        "a group of friends", "a struggling musician", "an aging boxer", "a lonely robot",
        "a family of farmers", "a journalist", "a chef")
_DOES = ("moves to the city", "tries to solve a murder", "returns home after many years",
         "goes on a road trip", "plans a heist", "looks for a missing brother",
         "enters a cooking contest", "falls in love with a neighbour", "runs for mayor")
_WHERE_WATCHED = ("on TV", "on DVD", "in the theater", "on a streaming service", "at home",
                  "on my laptop", "at a drive-in", "on cable")
_NEUTRAL = (
    "I saw it {when} with {whom}.",
    "I watched it {where} {when}.",
    "It runs about {minutes} minutes.",
    "The film is based on {source}.",
    "It was released in {year}.",
    "The story follows {who} who {does}.",
    "It is set in {place}.",
    "Most of it was filmed in {place}.",
    "I went in knowing nothing about it.",
    "I had not read the book before watching it.",
    "I did not know what to expect.",
    "I have not seen the original.",
    "I was not sure what it would be about.",
    "It is the {ordinal} film in the series.",
    "{whom_cap} told me about it.",
    "It was shown at a festival in {year}.",
    "The director also wrote the script.",
    "It stars a newcomer in the lead role.",
    "There are a few subplots along the way.",
    "I watched the director's cut.",
    "It is rated PG-13.",
    "The trailer came out in {year}.",
    "It was directed by a first-time director.",
    "I never read reviews before watching a film.",
    "We rented it {where}.",
    "The story takes place over one summer.",
    "It has a runtime of about two hours.",
    "The sequel came out {gap} years later.",
)
_ORDINALS = ("second", "third", "fourth", "fifth")


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _capitalize(s: str) -> str:
    return s[0].upper() + s[1:] if s else s


def _neutral_sentence(rng: np.random.Generator) -> str:
    template = _pick(rng, _NEUTRAL)
    whom = _pick(rng, _WHOM)
    return template.format(
        when=_pick(rng, _WHEN), whom=whom, whom_cap=_capitalize(whom),
        minutes=int(rng.integers(8, 17)) * 10, source=_pick(rng, _SOURCE),
        year=int(rng.integers(1970, 2024)), who=_pick(rng, _WHO), does=_pick(rng, _DOES),
        place=_pick(rng, _PLACE), ordinal=_pick(rng, _ORDINALS),
        where=_pick(rng, _WHERE_WATCHED), gap=int(rng.integers(2, 9)),
    )


def _be(rng: np.random.Generator, plural: bool, negated: bool) -> str:
    """A copula, negated or not: "was", "wasn't", "is not", "never seemed", "was far from"."""
    past = rng.random() < 0.75
    if rng.random() < 0.2:  # a perception verb instead of "be"
        verb = _pick(rng, (("felt", "feel"), ("seemed", "seem"), ("looked", "look")))
        if not negated:
            return verb[0]
        return _pick(rng, (f"did not {verb[1]}", f"didn't {verb[1]}", f"never {verb[0]}"))
    if past:
        base = "were" if plural else "was"
    else:
        base = "are" if plural else "is"
    if not negated:
        return base
    return _pick(rng, (f"{base} not", f"{base}n't", f"{base} not", f"{base}n't",
                       f"{base} never", f"{base} far from"))


def _clause(rng: np.random.Generator, positive: bool, negated: bool) -> str:
    """One opinion clause with exactly one sentiment word of the given lexical polarity.

    Its polarity is `positive` flipped when `negated`. A double-adjective form ("dull and
    lifeless", "neither funny nor clever") adds a second word of the same polarity.
    """
    whole_film = rng.random() < 0.45
    subject = _pick(rng, WHOLE_FILM) if whole_film else _pick(rng, ASPECTS)
    plural = subject in PLURAL
    adjectives = POSITIVE_ADJECTIVES if positive else NEGATIVE_ADJECTIVES
    form = rng.random()
    intens = (_pick(rng, INTENSIFIERS) + " ") if rng.random() < 0.35 else ""
    if form < 0.50:  # copula + adjective
        tail = " at all" if negated and rng.random() < 0.25 else ""
        be = _be(rng, plural, negated)
        if be.endswith("far from"):
            intens = ""
        return f"{subject} {be} {intens}{_pick(rng, adjectives)}{tail}"
    if form < 0.62:  # I found X adj
        found = _pick(rng, ("I did not find", "I didn't find", "I never found")) if negated \
            else _pick(rng, ("I found", "I thought", "we found"))
        return f"{found} {subject} {intens}{_pick(rng, adjectives)}"
    if form < 0.78:  # verb
        verbs = POSITIVE_VERBS if positive else NEGATIVE_VERBS
        past, base = _pick(rng, verbs)
        if negated:
            verb = _pick(rng, (f"did not {base}", f"didn't {base}", f"never {past}"))
        else:
            verb = _pick(rng, (past, past, f"really {past}", f"absolutely {past}"))
        who = _pick(rng, ("I", "I", "we", "my whole family"))
        return f"{who} {verb} {subject}"
    if form < 0.90 and whole_film:  # noun phrase about the whole film
        phrases = POSITIVE_NOUN_PHRASES if positive else NEGATIVE_NOUN_PHRASES
        be = _be(rng, False, negated)
        return f"{subject} {be} {_pick(rng, phrases)}"
    if form < 0.90:  # "the plot was a dull one", "the script was not a clever piece of work"
        be = _be(rng, plural, negated)
        if be.endswith("far from"):
            intens = ""
        noun = "ones" if plural else _pick(rng, ("one", "piece of work", "affair"))
        article = "" if plural else "a "
        return f"{subject} {be} {article}{intens}{_pick(rng, adjectives)} {noun}"
    # Two adjectives of the same polarity.
    a, b = rng.choice(len(adjectives), size=2, replace=False)
    a, b = adjectives[a], adjectives[b]
    be = _be(rng, plural, False)
    if negated:
        return f"{subject} {be} neither {a} nor {b}"
    return f"{subject} {be} {a} and {b}"


def _opinion_slots(rng: np.random.Generator, single_prob: float) -> tuple[str, int]:
    """Choose an opinion-sentence structure: (kind, number of clauses)."""
    r = rng.random()
    if r < single_prob:
        return "single", 1
    r = (r - single_prob) / (1.0 - single_prob)
    if r < 0.55:
        return "contrast", 2
    if r < 0.78:
        return "concede_first", 2  # "Although A, B": B (second) decides
    return "concede_last", 2  # "B, although A": B (first) decides


def _render_opinion(rng: np.random.Generator, kind: str, clauses: list[str],
                    verdict: bool) -> str:
    prefix = _pick(rng, VERDICT_PREFIXES if verdict else OPINION_PREFIXES)
    end = _pick(rng, (".", ".", ".", ".", "!", "!!"))
    if kind == "single":
        return _capitalize(prefix + clauses[0]) + end
    if kind == "contrast":
        a, b = clauses
        first = a + (_pick(rng, (" at first", " at times", " in places")) if rng.random() < 0.2
                     else "")
        conn = _pick(rng, CONTRAST)
        return _capitalize(prefix + first) + conn + " " + b + end
    if kind == "concede_first":  # "Although A, B."
        a, b = clauses
        conj = _pick(rng, CONCESSIVE)
        return _capitalize(prefix + f"{conj} {a}, {b}") + end
    # "B, although A."  (clauses are given in reading order: main clause first)
    b, a = clauses
    return _capitalize(prefix + f"{b}, {_pick(rng, CONCESSIVE)} {a}") + end


# Which clause of an opinion sentence (in reading order) decides its polarity.
_DECIDING = {"single": 0, "contrast": 1, "concede_first": 1, "concede_last": 0}


def generate_review(rng: np.random.Generator, *, negation_prob: float = 0.3,
                    single_prob: float = 0.5, two_opinions_prob: float = 0.2,
                    balance_prob: float = 0.0, max_neutral: int = 3) -> tuple[str, int]:
    """One review and its label (1 = positive), drawn from `rng`.

    negation_prob: each opinion clause negated; single_prob: an opinion sentence has one
    clause (else a contrast or a concession of two); two_opinions_prob: two opinion
    sentences; balance_prob: the non-deciding clauses' words balance the deciding one's
    (else they are random); max_neutral: up to this many neutral sentences.
    """
    label = int(rng.integers(2))
    n_opinions = 2 if rng.random() < two_opinions_prob else 1
    structures = [_opinion_slots(rng, single_prob) for _ in range(n_opinions)]
    n_clauses = sum(n for _, n in structures)
    negated = rng.random(n_clauses) < negation_prob
    # The deciding clause: the one that decides the last opinion sentence.
    deciding = n_clauses - structures[-1][1] + _DECIDING[structures[-1][0]]
    lexical = np.zeros(n_clauses, dtype=bool)  # True = positive word
    lexical[deciding] = bool(label) != bool(negated[deciding])
    others = [i for i in range(n_clauses) if i != deciding]
    if others and rng.random() >= balance_prob:
        lexical[others] = rng.random(len(others)) < 0.5
    elif others:
        # Balanced: as many positive as negative words in the review, the odd one out (odd
        # number of clauses) positive or negative at random.
        n_pos = n_clauses // 2 + (int(rng.integers(2)) if n_clauses % 2 else 0)
        rest_pos = n_pos - int(lexical[deciding])
        order = rng.permutation(len(others))
        for rank, j in enumerate(order):
            lexical[others[j]] = rank < rest_pos
    clauses = [_clause(rng, bool(lexical[i]), bool(negated[i])) for i in range(n_clauses)]
    sentences, k = [], 0
    for s, (kind, n) in enumerate(structures):
        verdict = n_opinions > 1 and s == n_opinions - 1
        sentences.append(_render_opinion(rng, kind, clauses[k:k + n], verdict))
        k += n
    for _ in range(int(rng.integers(max_neutral + 1))):
        # Neutral sentences anywhere (also after the verdict: they do not change it).
        sentences.insert(int(rng.integers(len(sentences) + 1)), _neutral_sentence(rng))
    return " ".join(sentences), label


def generate_reviews(n: int, seed: int | Sequence[int]) -> tuple[list[str], np.ndarray]:
    """`n` reviews and labels (int8 [n], 1 = positive), deterministic in `seed` (an int or a
    sequence of ints, as `np.random.default_rng` takes)."""
    rng = np.random.default_rng(seed)
    texts, labels = [], np.zeros(n, dtype=np.int8)
    for i in range(n):
        text, labels[i] = generate_review(rng)
        texts.append(text)
    return texts, labels


def synthetic_source_id(seed: int, num_train: int, num_test: int) -> str:
    """The token cache's name for a generated set: the generator version, seed and sizes
    (the final "{}", once the generator's options, keeps existing caches' keys)."""
    return f"synthetic:v{VERSION}:seed={seed}:n={num_train},{num_test}:{{}}"


def make_synthetic(seed: int, num_train: int, num_test: int) -> RawDataset:
    """`num_train` reviews for the training part (split 70/30 into train/validation like
    IMDB) and `num_test` for the test part, deterministic in `seed`."""
    if num_train < 2 or num_test < 1:
        raise DataError(f"synthetic set too small: num_train={num_train}, num_test={num_test}")
    tr = generate_reviews(num_train, [seed, 0])
    te = generate_reviews(num_test, [seed, 1])
    return RawDataset("synthetic", synthetic_source_id(seed, num_train, num_test),
                      TextSplit(*tr), TextSplit(*te))
