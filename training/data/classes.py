"""SynthMUSIC classes: the vocabulary and how each class is drawn and played.

``CLASSES`` is alphabetical; a class's index is its position (the model's class order).
``INSTRUMENTS`` says, per class, which General MIDI sound plays it (FluidR3_GM program, or
the GM percussion kit on MIDI channel 10 for ``drum``), the MIDI keys of the note bank
(spread over the instrument's natural range; for ``drum`` the GM percussion keys of the
kit pieces), and the Noto Color Emoji codepoint its sprite is rendered from.
``CLUTTER`` lists non-instrument emoji used as background clutter.

Only ``build_assets`` reads the GM/emoji metadata; the generator reads the built pack.
"""

from __future__ import annotations

from dataclasses import dataclass

CLASSES: tuple[str, ...] = (
    "accordion",
    "banjo",
    "bell",
    "drum",
    "flute",
    "guitar",
    "horn",
    "piano",
    "saxophone",
    "trumpet",
    "violin",
)

CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}

#: MIDI channel (0-based) of the GM percussion kit; "channel 10" in MIDI's 1-based numbering.
GM_PERCUSSION_CHANNEL = 9
#: SoundFont bank that holds the percussion kits.
GM_PERCUSSION_BANK = 128


@dataclass(frozen=True)
class Instrument:
    """How one class sounds and looks.

    program: GM program number (0-based), or None for the percussion kit.
    low, high: MIDI key range the note bank spans (inclusive), the instrument's natural range.
    keys: explicit MIDI keys to render instead of a spread over [low, high] (drum kit pieces).
    emoji: Unicode codepoint of the sprite in Noto Color Emoji.
    """

    name: str
    program: int | None
    low: int
    high: int
    emoji: int
    keys: tuple[int, ...] = ()

    @property
    def is_percussion(self) -> bool:
        return self.program is None


# GM percussion keys (General MIDI 1 key map) used for "drum" hits.
DRUM_KIT: dict[int, str] = {
    35: "acoustic bass drum",
    36: "bass drum 1",
    38: "acoustic snare",
    40: "electric snare",
    41: "low floor tom",
    43: "high floor tom",
    45: "low tom",
    47: "low-mid tom",
    48: "hi-mid tom",
    50: "high tom",
    37: "side stick",
    39: "hand clap",
    42: "closed hi-hat",
    46: "open hi-hat",
}

INSTRUMENTS: dict[str, Instrument] = {
    i.name: i
    for i in (
        # Right-hand keyboard of a piano accordion: F3..A6.
        Instrument("accordion", program=21, low=53, high=81, emoji=0x1FA97),
        # 5-string banjo in open G: D3 (open 4th string) .. about D6 up the neck.
        Instrument("banjo", program=105, low=50, high=84, emoji=0x1FA95),
        # Tubular bells (chimes): C4..F5 as written; GM patch sounds where written.
        Instrument("bell", program=14, low=60, high=79, emoji=0x1F514),
        Instrument(
            "drum",
            program=None,
            low=min(DRUM_KIT),
            high=max(DRUM_KIT),
            emoji=0x1F941,
            keys=(35, 36, 38, 40, 41, 43, 45, 47, 48, 50, 37, 39, 42, 46),
        ),
        # Concert flute C4..C7.
        Instrument("flute", program=73, low=60, high=96, emoji=0x1FA88),
        # Acoustic (steel) guitar: E2..E5 (12th fret of the high E string: E5 = 76; up to C6).
        Instrument("guitar", program=25, low=40, high=79, emoji=0x1F3B8),
        # French horn, sounding B1..F5; the common playing range F2..F5.
        Instrument("horn", program=60, low=41, high=77, emoji=0x1F4EF),
        # Piano: the musically common middle of A0..C8.
        Instrument("piano", program=0, low=36, high=96, emoji=0x1F3B9),
        # Alto saxophone, sounding Db3..Ab5.
        Instrument("saxophone", program=65, low=49, high=80, emoji=0x1F3B7),
        # Bb trumpet, sounding E3..Bb5 (practical).
        Instrument("trumpet", program=56, low=52, high=82, emoji=0x1F3BA),
        # Violin G3..E7 (practical upper range).
        Instrument("violin", program=40, low=55, high=100, emoji=0x1F3BB),
    )
}

#: Instruments that play one note at a time: the generator lets a note end where the next begins.
MONOPHONIC: frozenset[str] = frozenset({"flute", "horn", "saxophone", "trumpet", "violin"})

#: Non-instrument emoji (name -> codepoint) drawn as background clutter. None of them is a sound source.
CLUTTER: dict[str, int] = {
    "potted_plant": 0x1FAB4,
    "open_book": 0x1F4D6,
    "books": 0x1F4DA,
    "chair": 0x1FA91,
    "hot_beverage": 0x2615,
    "light_bulb": 0x1F4A1,
    "diya_lamp": 0x1FA94,
    "candle": 0x1F56F,
    "amphora": 0x1F3FA,
    "teddy_bear": 0x1F9F8,
    "framed_picture": 0x1F5BC,
    "couch_and_lamp": 0x1F6CB,
    "package": 0x1F4E6,
    "cactus": 0x1F335,
    "deciduous_tree": 0x1F333,
    "backpack": 0x1F392,
}


def class_index(name: str) -> int:
    """Index of a class name in ``CLASSES``; a clear error for an unknown name."""
    try:
        return CLASS_INDEX[name]
    except KeyError:
        raise ValueError(f"unknown SynthMUSIC class {name!r}; expected one of {', '.join(CLASSES)}") from None


assert tuple(sorted(CLASSES)) == CLASSES
assert set(INSTRUMENTS) == set(CLASSES)
