"""The generate loop's text, the same on both paths: router/sampling.py's StreamedText (the server's engine)
and sampling.js's (the browser engine) turn the same token streams into the same pieces, with the same token
ids, the same held-back tails and the same stops. No model: a byte-level vocabulary of our own, whose tokens
split characters (é, ☕, 🙂) between them as a real tokenizer's do."""
from __future__ import annotations

import random

import pytest

from router.sampling import StreamedText
from tests.support.node import run_js

VOCABULARY = [piece.encode() for piece in ["Hello", " world", "!", " ", "ab", "ST", "O", "P", "ar", "\n", "END",
                                            "caf", "ok", "x", "EN", "D!"]]
VOCABULARY += ["é".encode()[:1], "é".encode()[1:], "☕".encode()[:2], "☕".encode()[2:], "🙂".encode()[:1],
               "🙂".encode()[1:3], "🙂".encode()[3:]]
ID = {piece: i for i, piece in enumerate(VOCABULARY)}


def ids(*pieces) -> list[int]:
    return [ID[p if isinstance(p, bytes) else p.encode()] for p in pieces]


E1, E2, C1, C2, S1, S2, S3 = range(16, 23)  # the split characters' pieces
STREAMS = [
    (ids("Hello", " world", "!"), []),
    (ids("caf") + [E1, E2] + ids(" ") + [C1, C2] + ids(" ", "ok"), []),          # characters split between tokens
    (ids("ab", "ST", "O", "P", "ab"), ["STOP"]),                                 # a stop string over three tokens
    (ids("ab", "ST", "ar", "!"), ["STOP"]),                                      # held back, then not a stop after all
    (ids("x") + [E1], []),                                                       # the answer ends inside a character
    (ids("ab", "ST"), ["STOP"]),                                                 # ends while a stop may still begin
    (ids("STOP"[:2], "O", "P"), ["STOP"]),                                       # a stop at the very start
    (ids("ok", "\n", "\n", "END"), ["\n\n", "END"]),                             # the earlier of two stops
    ([S1, S2, S3] + ids("EN", "D!"), ["END"]),                                   # a stop after a split character
    (ids("EN", "D!", "ok"), ["END", "D!"]),                                      # overlapping stops
]


def random_streams(n: int) -> list[tuple[list[int], list[str]]]:
    rng = random.Random(7)
    stops = [[], ["STOP"], ["END"], ["\n\n", "END"], ["ok!"], ["é"], ["☕ ok"]]
    return [([rng.randrange(len(VOCABULARY)) for _ in range(rng.randrange(1, 30))], rng.choice(stops))
            for _ in range(n)]


def decode(window: list[int]) -> str:
    return b"".join(VOCABULARY[i] for i in window).decode("utf-8", "replace")


def python_pieces(tokens: list[int], stops: list[str]) -> list:
    """As the engine's loop runs it: push each token until a stop, then the tail."""
    streamed, pieces = StreamedText(decode, tuple(stops)), []
    for token in tokens:
        piece = streamed.push(token)
        pieces.append(list(piece) if piece else None)
        if streamed.stopped:
            break
    tail = streamed.tail()
    return pieces + [list(tail) if tail else None, streamed.stopped]


def js_pieces(streams) -> list:
    return run_js("""
        const vocabulary = data.vocabulary.map((hex) => Uint8Array.from(hex.match(/../g) ?? [], (b) => parseInt(b, 16)));
        const decode = (window) => {
          const bytes = window.flatMap((i) => Array.from(vocabulary[i]));
          return new TextDecoder().decode(Uint8Array.from(bytes));
        };
        return data.streams.map(([tokens, stops]) => {
          const streamed = new modules.sampling.StreamedText(decode, stops), pieces = [];
          for (const token of tokens) {
            const piece = streamed.push(token);
            pieces.push(piece ? [piece.text, piece.ids] : null);
            if (streamed.stopped) break;
          }
          const tail = streamed.tail();
          return [...pieces, tail ? [tail.text, tail.ids] : null, streamed.stopped];
        });""", {"vocabulary": [piece.hex() for piece in VOCABULARY], "streams": streams})


def test_the_stated_cases_give_these_pieces_in_python():
    """What the loop must do, stated once (the JS is compared against the same function below): a piece per
    token that made text final, None where nothing is final yet, then the tail, then whether it stopped."""
    assert python_pieces(*STREAMS[1]) == [["caf", [11]], None, ["é", [16, 17]], [" ", [3]], None, ["☕", [18, 19]],
                                          [" ", [3]], ["ok", [12]], None, False]
    assert python_pieces(*STREAMS[2]) == [["ab", [4]], None, None, None, ["", [5, 6, 7]], True]  # the stop's ids too
    assert python_pieces(*STREAMS[3]) == [["ab", [4]], None, ["STar", [5, 8]], ["!", [2]], None, False]
    assert python_pieces(*STREAMS[4]) == [["x", [13]], None, ["", [16]], False]  # the last id still delivered
    assert python_pieces(*STREAMS[5]) == [["ab", [4]], None, ["ST", [5]], False]  # a held tail is shown at the end
    assert python_pieces(*STREAMS[7]) == [["ok", [12]], None, None, ["", [9, 9]], True]
    assert python_pieces(*STREAMS[8]) == [None, None, ["🙂", [20, 21, 22]], None, None, ["", [14, 15]], True]


@pytest.mark.parametrize("streams", [STREAMS, random_streams(300)], ids=["stated", "random"])
def test_browser_and_server_stream_the_same_pieces(streams):
    assert js_pieces(streams) == [python_pieces(tokens, stops) for tokens, stops in streams]
