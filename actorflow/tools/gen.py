"""Generate deterministic input files for the example apps, and the results they should give.

Wallaroo's examples are exercised with files of framed "alphabet" votes and lines of
text for word count. This module writes such files from a seed, so a run can be repeated
exactly, and provides pure helpers (`alphabet_totals`, `word_counts`) that compute the
expected results without going through the engine, for tests and demos to compare with.
"""

from __future__ import annotations

import argparse
import random
import string
import struct
import sys
from collections.abc import Iterable

from actorflow.tools.framing import FrameReader

ALPHABET_PAYLOAD = struct.Struct(">sI")  # 1 ASCII letter, then big-endian uint32 votes
ALPHABET_FRAME = struct.Struct(">IsI")  # the same with its 4-byte length header (always 5)

# Plain lower-case words only: punctuation and capitals are added around them when lines
# are made, so every sensible normalisation (lower-case, strip punctuation at word edges)
# gives back exactly these words.
VOCABULARY: tuple[str, ...] = tuple(
    """
    the of and to in is it you that he was for on are with as his they be at one have this
    from or had by word but what some we can out other were all there when up use your how
    said an each she which do their time if will way about many then them write would like
    so these her long make thing see him two has look more day could go come did number
    sound no most people my over know water than call first who may down side been now
    find any new work part take get place made live where after back little only round man
    year came show every good me give our under name very through just form sentence great
    think say help low line differ turn cause much mean before move right boy old too same
    tell does set three want air well also play small end put home read hand port large
    spell add even land here must big high such follow act why ask men change went light
    kind off need house picture try us again animal point mother world near build self
    earth father head stand own page should country found answer school grow study still
    learn plant cover food sun four between state keep eye never last let thought city tree
    cross farm hard start might story saw far sea draw left late run while press close night
    real life few north stream actor flow window river
    """.split()
)

_END_MARKS = (".", ".", ".", "!", "?")


def alphabet_frames(n: int, seed: int = 1, letters: str = string.ascii_lowercase) -> list[bytes]:
    """Return `n` alphabet vote frames (header included), letters and votes 1..10 from `seed`."""
    if not letters or not all(c.isascii() and c.isalpha() for c in letters):
        raise ValueError(f"letters must be ASCII letters, got {letters!r}")
    rng = random.Random(seed)
    picked_letters = rng.choices(letters, k=n)
    picked_votes = rng.choices(range(1, 11), k=n)
    table = {
        (letter, votes): ALPHABET_FRAME.pack(5, letter.encode("ascii"), votes)
        for letter in set(letters)
        for votes in range(1, 11)
    }
    return [table[key] for key in zip(picked_letters, picked_votes, strict=True)]


def alphabet_decode(message: bytes) -> tuple[str, int]:
    """Decode one alphabet message, either a 9-byte frame or its 5-byte payload."""
    if len(message) == ALPHABET_FRAME.size:
        _, letter, votes = ALPHABET_FRAME.unpack(message)
    elif len(message) == ALPHABET_PAYLOAD.size:
        letter, votes = ALPHABET_PAYLOAD.unpack(message)
    else:
        raise ValueError(f"an alphabet message is 5 or 9 bytes long, got {len(message)}")
    return letter.decode("ascii"), votes


def alphabet_totals(frames: Iterable[bytes]) -> dict[str, int]:
    """Return the final vote total per letter for alphabet frames (or their payloads)."""
    totals: dict[str, int] = {}
    for message in frames:
        letter, votes = alphabet_decode(message)
        totals[letter] = totals.get(letter, 0) + votes
    return totals


def word_lines(n: int, seed: int = 1) -> list[str]:
    """Return `n` lines of 3-12 vocabulary words with capitals, commas, end marks and quotes."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = rng.choices(VOCABULARY, k=rng.randint(3, 12))
        words[0] = words[0].capitalize()
        for i in range(len(words)):
            roll = rng.random()
            if roll < 0.04:
                words[i] = words[i].upper()
            elif roll < 0.10:
                words[i] = words[i].capitalize()
        for i in range(len(words) - 1):
            if rng.random() < 0.12:
                words[i] += ","
        words[-1] += rng.choice(_END_MARKS)
        if len(words) >= 4 and rng.random() < 0.25:
            start = rng.randrange(len(words) - 1)
            end = rng.randrange(start, len(words))
            words[start] = '"' + words[start]
            words[end] = words[end] + '"'
        lines.append(" ".join(words))
    return lines


def normalise_word(token: str) -> str:
    """Lower-case a token and strip punctuation from its edges ("" if nothing is left)."""
    return token.lower().strip(string.punctuation)


def word_counts(lines: Iterable[str]) -> dict[str, int]:
    """Return how often each normalised word occurs in `lines` (split on whitespace)."""
    counts: dict[str, int] = {}
    for line in lines:
        for token in line.split():
            word = normalise_word(token)
            if word:
                counts[word] = counts.get(word, 0) + 1
    return counts


def read_alphabet_file(path: str) -> list[bytes]:
    """Read a framed alphabet file back as full frames (header included)."""
    with open(path, "rb") as f:
        data = f.read()
    reader = FrameReader()
    payloads = reader.feed(data)
    if reader.pending:
        raise ValueError(f"{path} ends with {reader.pending} bytes of a truncated frame")
    return [ALPHABET_FRAME.pack(5, *ALPHABET_PAYLOAD.unpack(p)) for p in payloads]


def _write(path: str, data: bytes) -> None:
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        with open(path, "wb") as f:
            f.write(data)


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Add the `gen alphabet` and `gen words` sub-commands and their flags to `p`."""
    kinds = p.add_subparsers(dest="gen_kind", metavar="KIND", required=True)
    alpha = kinds.add_parser(
        "alphabet",
        help="framed alphabet votes (1 letter + uint32 votes), for send --framed",
        description="Write N framed alphabet vote messages: 1 ASCII letter + big-endian "
        "uint32 votes (1..10), each with a 4-byte big-endian length header.",
    )
    words = kinds.add_parser(
        "words",
        help="lines of text for word count, for send --newlines",
        description="Write N newline-terminated lines of 3-12 words with capitals and punctuation.",
    )
    for sub in (alpha, words):
        sub.add_argument(
            "--messages",
            type=int,
            required=True,
            metavar="N",
            help="number of messages (frames or lines) to write",
        )
        sub.add_argument(
            "--output", required=True, metavar="F", help="file to write, or - for stdout"
        )
        sub.add_argument(
            "--seed", type=int, default=1, metavar="S", help="random seed (default: 1)"
        )
    alpha.add_argument(
        "--letters",
        default=string.ascii_lowercase,
        metavar="LETTERS",
        help="letters to draw from (default: a-z)",
    )


def main(args: argparse.Namespace) -> int:
    """Run `gen` with parsed arguments; return the exit code."""
    if args.messages < 0:
        print("actorflow gen: error: --messages must be 0 or more", file=sys.stderr)
        return 1
    try:
        if args.gen_kind == "alphabet":
            data = b"".join(alphabet_frames(args.messages, args.seed, args.letters))
        else:
            data = "".join(line + "\n" for line in word_lines(args.messages, args.seed)).encode()
        _write(args.output, data)
    except (OSError, ValueError) as exc:
        print(f"actorflow gen: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _standalone(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actorflow gen", description=__doc__.splitlines()[0])
    configure_parser(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(_standalone())
