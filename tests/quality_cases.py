"""A labelled set for the quality gate: good and garbage dialogues over the sample's segments.

Good ones are written the way a capable model writes them: paraphrases that share few literal
words with the segment text, short answers, imperative questions, immediate replies that say
nothing was shown yet. Garbage covers every kind a small model behind a JSON grammar produced
(FACTS.md "Dialogue quality", issue 28's examples) and more: numbers and single words for
questions, placeholders, JSON debris, answers about another segment or about nothing in the video,
answers restating the question, near-duplicates, loops, copied instructions, gibberish. Each case
is (video, kind, the LLM's reply in the full shape); all of them validate structurally, or are
refused by the validator's own rules (a rejection either way).
"""

from __future__ import annotations

import functools
import tempfile

from schemas.records import Segment
from tests.conftest import SAMPLES

CAPTIONS = [  # generated_six_scenes's scene captions (samples/replay_answers.yaml), its segments
    (0.0, 8.0, "A test pattern of vertical colour bars with a rainbow gradient line sweeping diagonally across it, "
               "small coloured squares moving near the top, and a running timecode with a frame counter in the "
               "top-left corner."),
    (8.0, 14.0, "Still SMPTE colour bars: seven vertical bars of grey, yellow, cyan, green, magenta, red and blue "
                "above a strip of blue, black, white and purple blocks. Nothing moves."),
    (14.0, 24.0, "A colourful Mandelbrot fractal with red and green bulbs on a pink background; the view zooms in "
                 "steadily toward the edge of the largest bulb."),
    (24.0, 32.0, "Three horizontal bands that fade from black on the left to full red, green and blue on the right. "
                 "The image does not change."),
    (32.0, 39.0, "A black-and-white cellular automaton fills the frame with a dense texture of tiny triangles and "
                 "diagonal streaks that shifts as new rows of cells are drawn."),
    (39.0, 48.0, "A plain, uniform navy-blue screen with nothing else in view."),
]
DURATIONS = {"bikes": 10.0, "bigbuckbunny": 5.3, "generated_four_scenes": 36.0, "generated_six_scenes": 48.0,
             "spoken_tour": 24.0}


@functools.lru_cache(maxsize=1)
def spoken_tour_segments() -> tuple[Segment, ...]:
    """The narrated sample clip's segments as the sample run makes them: its speech transcribed with
    the sample config's ASR settings (needs the `asr` extra)."""
    from curation.config import load_config
    from curation.speech.route import route_speech
    from tests.speech_media import video_record

    path = SAMPLES / "videos" / "spoken_tour.mp4"
    with tempfile.TemporaryDirectory() as cache:
        out = route_speech(path, video_record(path, "spoken_tour"), load_config(SAMPLES / "sample.yaml").asr, cache)
    return tuple(out.segments)


def segments_of(video_id: str) -> list[Segment]:
    from curation.text.source_text import read_source_segments

    if video_id == "spoken_tour":
        return list(spoken_tour_segments())
    if video_id == "generated_six_scenes":
        return [Segment(segment_id=f"{video_id}-s{i:04d}", video_id=video_id, start_s=s, end_s=e, text=t,
                        origin="caption", scene_id=i) for i, (s, e, t) in enumerate(CAPTIONS)]
    return read_source_segments(SAMPLES / "text" / f"{video_id}.csv", video_id)


def a(ids: str | list[str], text: str) -> dict:
    """One cited answer; `ids` are segment numbers after the video id, e.g. "bikes-s0003" as "bikes:3"."""
    ids = [ids] if isinstance(ids, str) else ids
    out = []
    for ref in ids:
        video, n = ref.split(":")
        out.append(f"{video}-s{int(n):04d}")
    return {"segment_ids": out, "answer": text}


def single(question: str, *answers: dict) -> dict:
    return {"question": question, "answers": list(answers)}


def q(question: str, at: str, immediate: str | None, *answers: dict) -> dict:
    video, n = at.split(":")
    return {"question": question, "asked_at_segment": f"{video}-s{int(n):04d}", "immediate_reply": immediate,
            "answers": list(answers)}


def multi(*questions: dict) -> dict:
    return {"questions": list(questions)}


B, R, F, S = "bikes", "bigbuckbunny", "generated_four_scenes", "generated_six_scenes"

GOOD: list[tuple[str, str, dict]] = [
    (B, "single_question", single("What kinds of traffic go by on this street?",
                                  a("bikes:2", "A taxi passes so close that only its roof is in view."),
                                  a("bikes:3", "A van waits while a cyclist in dark clothes rides past it."),
                                  a("bikes:4", "Behind a railing, cars drive down a street of brick houses."))),
    (B, "single_question", single("Who do we see out on the street?",
                                  a("bikes:1", "A man in a suit and tie, weaving between the parked cars."),
                                  a("bikes:3", "Someone on a bike, dressed in dark clothes."),
                                  a("bikes:5", "A pedestrian strolling past a locked bicycle."))),
    (B, "single_question", single("Tell me about the vehicles as they appear.",
                                  a("bikes:2", "There goes a taxi, right up against the lens."),
                                  a("bikes:3", "A small delivery van is stuck in traffic."),
                                  a("bikes:4", "Several cars move along the road by the brick terraces."))),
    (B, "single_question", single("How does this street scene begin?",
                                  a("bikes:0", "With a white bollard on the grey pavement."),
                                  a("bikes:1", "Then a smartly dressed man walks between parked cars."))),
    (B, "single_question", single("What is happening around the parked cars?",
                                  a(["bikes:1"], "A businessman in a tie picks his way between them."))),
    (B, "single_question", single("Is anyone riding a bicycle here?",
                                  a("bikes:3", "Yes, a cyclist in dark clothing rides past a waiting van."),
                                  a("bikes:5", "Later a bicycle stands chained to a railing instead."))),
    (B, "single_question", single("Where is this filmed, and what passes by?",
                                  a("bikes:0", "On a city pavement with a white traffic post."),
                                  a("bikes:2", "A cab's roof slides past close by."),
                                  a("bikes:4", "A road lined with brick houses, cars going by behind railings."))),
    (B, "multi_question", multi(
        q("Who is walking along here?", "bikes:0", None, a("bikes:1", "A man in a dark suit and tie.")),
        q("What is chained up near the bollards?", "bikes:5", "Nothing has been chained up so far.",
          a("bikes:5", "A bicycle, locked to a railing.")))),
    (B, "multi_question", multi(
        q("What is the first thing on screen?", "bikes:0", None, a("bikes:0", "A white bollard on the pavement."),
          a("bikes:1", "Then a man in a suit crossing between parked cars.")),
        q("Which vehicles go past now?", "bikes:2", "So far only parked cars have been seen.",
          a("bikes:2", "A taxi, passing very close."), a("bikes:3", "A van in traffic, and a cyclist beside it.")),
        q("What does the last shot show?", "bikes:5", "Before this, cars drove down a street of brick houses.",
          a("bikes:5", "Someone walks past a bike fastened behind two bollards.")))),
    (B, "multi_question", multi(
        q("What is the man wearing?", "bikes:1", "Only a white bollard has been shown so far.",
          a("bikes:1", "A dark suit with a tie.")),
        q("Who rides past the van?", "bikes:3", "Earlier a taxi went by close to the camera.",
          a("bikes:3", "A cyclist dressed in dark clothes.")))),
    (R, "single_question", single("What does the big rabbit do as it starts its day?",
                                  a("bigbuckbunny:0", "It crawls out of a burrow under a tree on a grassy hill."),
                                  a("bigbuckbunny:1", "It stands up and stretches its arms in the morning light."),
                                  a("bigbuckbunny:2", "It yawns, then stands still looking sleepy."))),
    (R, "single_question", single("Describe what the animal does.",
                                  a("bigbuckbunny:0", "The rabbit emerges from its hole beneath a tree."),
                                  a("bigbuckbunny:1", "It rises to its feet and stretches."),
                                  a("bigbuckbunny:2", "A big yawn, and then it just stands there, drowsy."))),
    (R, "single_question", single("How does the rabbit seem this morning?",
                                  a("bigbuckbunny:1", "Stiff: it stretches its arms as soon as it is up."),
                                  a("bigbuckbunny:2", "Tired, yawning with a sleepy look on its face."))),
    (R, "single_question", single("Where does the bunny come from?",
                                  a("bigbuckbunny:0", "Out of a burrow dug under a tree on the hillside."))),
    (R, "multi_question", multi(
        q("Where does the rabbit come from?", "bigbuckbunny:0", None,
          a("bigbuckbunny:0", "From a burrow under a tree on a grassy hill, crawling out on all fours.")),
        q("How does the rabbit seem now that it is out in the open?", "bigbuckbunny:1",
          "It has just crawled out of its burrow under the tree.",
          a("bigbuckbunny:1", "It stands up and stretches its arms in the sunshine."),
          a("bigbuckbunny:2", "Still sleepy, it yawns and then stands there without moving.")))),
    (R, "multi_question", multi(
        q("What creature appears?", "bigbuckbunny:0", None, a("bigbuckbunny:0", "A large grey rabbit.")),
        q("What does it do once it is standing?", "bigbuckbunny:1", "It climbed out from under a tree.",
          a("bigbuckbunny:1", "It reaches its arms up in a long stretch."),
          a("bigbuckbunny:2", "It lets out a yawn.")))),
    (F, "single_question", single("Which test images appear on the screen, one after another?",
                                  a("generated_four_scenes:0", "First a pattern of vertical colour bars with a "
                                                               "moving gradient line and a running timecode."),
                                  a("generated_four_scenes:1", "Then SMPTE colour bars fill the whole frame."),
                                  a("generated_four_scenes:2", "Next comes a colourful Mandelbrot fractal that "
                                                               "slowly zooms in."),
                                  a("generated_four_scenes:3", "Last, an image of red, green and blue gradients."))),
    (F, "single_question", single("What patterns does the screen cycle through?",
                                  a("generated_four_scenes:0", "Vertical bars with a line gliding over them and a "
                                                               "clock counting up."),
                                  a("generated_four_scenes:1", "The classic SMPTE bars."),
                                  a("generated_four_scenes:2", "A Mandelbrot set, zooming."),
                                  a("generated_four_scenes:3", "Gradients running into red, green and blue."))),
    (F, "single_question", single("When does a fractal show up?",
                                  a("generated_four_scenes:2", "Now: a colourful Mandelbrot fractal, slowly zooming "
                                                               "in."))),
    (F, "single_question", single("How does the picture move?",
                                  a("generated_four_scenes:0", "A gradient line travels across the bars while the "
                                                               "timecode runs."),
                                  a("generated_four_scenes:2", "The camera keeps zooming into a fractal."))),
    (F, "multi_question", multi(
        q("What is moving in the picture?", "generated_four_scenes:0", None,
          a("generated_four_scenes:0", "A gradient line travels across the vertical bars while the timecode runs.")),
        q("What shape is shown now, and how does it change?", "generated_four_scenes:2",
          "Until now only test patterns were shown, bars with a moving line and then SMPTE bars.",
          a("generated_four_scenes:2", "A colourful Mandelbrot fractal, and the view slowly zooms into it."),
          a("generated_four_scenes:3", "It gives way to a still image of red, green and blue gradients.")))),
    (F, "multi_question", multi(
        q("What kind of chart is displayed first?", "generated_four_scenes:0", None,
          a("generated_four_scenes:0", "A colour test pattern with vertical bars and a timecode.")),
        q("What replaces the colour bars?", "generated_four_scenes:2", "SMPTE colour bars were on screen before.",
          a("generated_four_scenes:2", "A Mandelbrot fractal."), a("generated_four_scenes:3", "Then RGB gradients.")))),
    (S, "single_question", single("How does the motion on screen change from one scene to the next?",
                                  a("generated_six_scenes:0", "Everything is in motion; a rainbow line sweeps over "
                                                              "the bars, small squares move and the timecode runs."),
                                  a("generated_six_scenes:1", "The motion stops for still SMPTE colour bars."),
                                  a("generated_six_scenes:2", "Movement returns as the view zooms steadily into a "
                                                              "Mandelbrot fractal."),
                                  a("generated_six_scenes:3", "It is still again, with fixed bands fading from "
                                                              "black to red, green and blue."),
                                  a("generated_six_scenes:4", "A black-and-white cellular automaton keeps shifting "
                                                              "as new rows of cells appear."),
                                  a("generated_six_scenes:5", "Nothing moves on the plain navy-blue screen at the "
                                                              "end."))),
    (S, "single_question", single("What colours dominate each part of the video?",
                                  a("generated_six_scenes:1", "Grey, yellow, cyan, green, magenta, red and blue bars."),
                                  a("generated_six_scenes:2", "Pink, with red and green bulbs."),
                                  a("generated_six_scenes:4", "Only black and white."),
                                  a("generated_six_scenes:5", "A single navy blue."))),
    (S, "single_question", single("Tell me when the picture stops changing.",
                                  a("generated_six_scenes:1", "Right now: the colour bars are completely still."),
                                  a("generated_six_scenes:3", "Again here, the three gradient bands stay fixed."),
                                  a("generated_six_scenes:5", "At the end, the flat blue screen stays the same."))),
    (S, "single_question", single("What is drawn on the screen?",
                                  a("generated_six_scenes:2", "A Mandelbrot fractal on pink."),
                                  a("generated_six_scenes:4", "A cellular automaton made of little triangles."))),
    (S, "single_question", single("Which moving details can be spotted?",
                                  a("generated_six_scenes:0", "Little coloured squares drift near the top and the "
                                                              "frame counter ticks."),
                                  a("generated_six_scenes:2", "The zoom creeps toward the biggest bulb."),
                                  a("generated_six_scenes:4", "Streaks shift as fresh rows of cells are drawn."))),
    (S, "multi_question", multi(
        q("What is written in the top-left corner?", "generated_six_scenes:0", None,
          a("generated_six_scenes:0", "A running timecode, with a frame counter under it.")),
        q("What kind of image is on screen now?", "generated_six_scenes:2",
          "Before this came a moving test pattern and then still SMPTE colour bars.",
          a("generated_six_scenes:2", "A colourful Mandelbrot fractal, zooming in toward the edge of its largest "
                                      "bulb."),
          a("generated_six_scenes:3", "Then three still bands that fade from black to red, green and blue.")),
        q("What does the screen show as the video draws to a close?", "generated_six_scenes:4",
          "Since the fractal, only still bands of colour gradients have been shown.",
          a("generated_six_scenes:4", "A black-and-white cellular automaton whose tiny triangles shift as new rows "
                                      "are drawn."),
          a("generated_six_scenes:5", "Finally a plain navy-blue screen with nothing else in view.")))),
    (S, "multi_question", multi(
        q("Is the first image moving or still?", "generated_six_scenes:0", None,
          a("generated_six_scenes:0", "Moving: a rainbow line sweeps across the colour bars.")),
        q("What does the fractal look like?", "generated_six_scenes:2", "No fractal has been shown yet.",
          a("generated_six_scenes:2", "Red and green bulbs on a pink background, with the view zooming in.")),
        q("How does the video end?", "generated_six_scenes:5", "A black-and-white automaton was shifting before this.",
          a("generated_six_scenes:5", "On a blank navy-blue screen.")))),
    (S, "multi_question", multi(
        q("What appears after the colour bars?", "generated_six_scenes:1", "A test pattern with moving squares.",
          a("generated_six_scenes:2", "A Mandelbrot fractal with a steady zoom.")),
        q("What texture fills the frame now?", "generated_six_scenes:4",
          "Earlier the screen held gradient bands from black to red, green and blue.",
          a("generated_six_scenes:4", "Tiny triangles and diagonal streaks from a cellular automaton.")))),
    (B, "single_question", single("What's parked or fixed along the pavement?",
                                  a("bikes:0", "A white traffic bollard."),
                                  a("bikes:5", "A bike, chained behind a pair of bollards."))),
    (F, "single_question", single("Does the screen ever show a clock?",
                                  a("generated_four_scenes:0", "Yes, a timecode keeps running over the test pattern."))),
    (R, "single_question", single("What can be seen near the tree?",
                                  a("bigbuckbunny:0", "A burrow, from which a large grey rabbit crawls out."))),
    (B, "single_question", single("Which things move close to the camera?",
                                  a("bikes:2", "The roof of a taxi, almost filling the view."))),
    (S, "single_question", single("What does the last scene look like?",
                                  a("generated_six_scenes:5", "A flat navy-blue picture and nothing more."))),
    (B, "multi_question", multi(
        q("What stands on the pavement at first?", "bikes:0", None, a("bikes:0", "A white bollard.")),
        q("What happens in the traffic?", "bikes:3", "A taxi drove past near the camera a moment ago.",
          a("bikes:3", "A cyclist overtakes a van that is waiting."),
          a("bikes:4", "Cars roll along past rows of brick houses.")))),
    (F, "multi_question", multi(
        q("What fills the screen at the start?", "generated_four_scenes:0", None,
          a("generated_four_scenes:0", "Colour bars with a line sweeping over them and a timecode."),
          a("generated_four_scenes:1", "After that, SMPTE colour bars.")),
        q("What is the final image?", "generated_four_scenes:3", "A fractal zoom was shown just before.",
          a("generated_four_scenes:3", "Red, green and blue gradients.")))),
    (R, "single_question", single("What is the rabbit like?",
                                  a("bigbuckbunny:0", "Big and grey, coming out of a hole under a tree."),
                                  a("bigbuckbunny:2", "Sleepy: it yawns and stays still."))),
    (S, "single_question", single("What do the still scenes show?",
                                  a("generated_six_scenes:1", "SMPTE bars above a strip of blue, black, white and "
                                                              "purple blocks."),
                                  a("generated_six_scenes:3", "Three bands, each fading from black into red, green "
                                                              "or blue."))),
]

# --- garbage ----------------------------------------------------------------------------------
_BIKES_OK = [a("bikes:2", "A taxi passes close to the camera."), a("bikes:3", "A cyclist rides past a small van.")]

GARBAGE: list[tuple[str, str, dict]] = [
    # questions that are numbers, single words, the video id, not questions
    (B, "single_question", single("5.1", *_BIKES_OK)),
    (B, "single_question", single("bikes", *_BIKES_OK)),
    (B, "single_question", single("text", *_BIKES_OK)),
    (B, "single_question", single("The man walks down the street.", *_BIKES_OK)),
    (B, "single_question", single("2.5561337890018806", *_BIKES_OK)),
    (B, "single_question", single("question1", *_BIKES_OK)),
    (R, "single_question", single("rabbit", a("bigbuckbunny:0", "A rabbit crawls out of a burrow."))),
    # answers that are placeholders, numbers, debris
    (B, "single_question", single("What goes by on the street?", a("bikes:2", "0.1"), a("bikes:3", "text"))),
    (B, "single_question", single("What goes by on the street?", a("bikes:2", "]}{"))),
    (B, "single_question", single("What goes by on the street?", a("bikes:2", "question1"),
                                  a("bikes:3", "answer 2"))),
    (B, "single_question", single("What goes by on the street?", a("bikes:2", "2.5561337890018806"))),
    (B, "single_question", single("What goes by on the street?", a("bikes:2", "..."))),
    (B, "single_question", single("What goes by on the street?", a("bikes:2", "<answer>"))),
    (B, "single_question", single("What goes by on the street?", a("bikes:2", "N/A"))),
    (B, "single_question", single("What goes by on the street?", a("bikes:2", "string"), a("bikes:3", "string"))),
    (B, "single_question", single("What goes by on the street?", a("bikes:2", '{"answer": "A taxi passes."}'))),
    (B, "single_question", single("What goes by on the street?",
                                  a("bikes:2", 'A taxi passes", "segment_ids": ["bikes-s0003"'))),
    (B, "single_question", single("What goes by on the street?", a("bikes:2", "_freetv_1"))),
    (B, "single_question", single("What goes by on the street?", a("bikes:2", "greil"))),
    (B, "single_question", single("What goes by on the street?", a("bikes:2", "Answer: a taxi passes by."))),
    (F, "single_question", single("What is shown?", a("generated_four_scenes:0", "1"),
                                  a("generated_four_scenes:1", "2"))),
    # answers about another segment, or about nothing in the video
    (B, "single_question", single("Who is on the street?",
                                  a("bikes:0", "The man in a dark suit and tie is a cyclist."))),
    (B, "single_question", single("What happens on the street?",
                                  a("bikes:5", "A small van waits in traffic while a cyclist rides past it."))),
    (B, "single_question", single("What happens on the street?",
                                  a("bikes:0", "The weather is sunny and birds sing in the trees."))),
    (R, "single_question", single("What does the rabbit do?",
                                  a("bigbuckbunny:0", "The rabbit yawns, then stands still looking sleepy."),
                                  a("bigbuckbunny:2", "It crawls out of a burrow under a tree."))),
    (F, "single_question", single("What is on screen?",
                                  a("generated_four_scenes:0", "A colourful Mandelbrot fractal slowly zooms in."))),
    (S, "single_question", single("What is on screen?",
                                  a("generated_six_scenes:5", "A cellular automaton of tiny triangles and streaks."))),
    (S, "single_question", single("What is on screen?",
                                  a("generated_six_scenes:0", "A dog chases a ball across a park."))),
    (R, "single_question", single("What does it do?", a("bigbuckbunny:1", "It is."))),
    (B, "single_question", single("What happens?", a("bikes:1", "Yes."))),
    # answers restating the question; questions holding their answer
    (B, "single_question", single("Does a cyclist in dark clothes ride past a small van?",
                                  a("bikes:3", "A cyclist in dark clothes rides past a small van."))),
    (R, "single_question", single("What does the rabbit do after it stands up and stretches?",
                                  a("bigbuckbunny:1", "The rabbit stands up and stretches."))),
    (B, "single_question", single("What is the man in the dark suit doing?",
                                  a("bikes:1", "The man in the dark suit is doing it."))),
    # near-duplicate answers
    (B, "single_question", single("What goes by?", a("bikes:3", "A cyclist in dark clothes rides past a small van."),
                                  a("bikes:4", "A cyclist in dark clothes rides past a small van again."))),
    (R, "single_question", single("What does the rabbit do?", a("bigbuckbunny:1", "The rabbit stands up and stretches."),
                                  a("bigbuckbunny:2", "The rabbit stands up and stretches its arms."))),
    (F, "single_question", single("What is on screen?", a("generated_four_scenes:0", "Colour test bars are shown."),
                                  a("generated_four_scenes:1", "Colour bars are shown on the test screen."))),
    # loops and repeats
    (B, "single_question", single("What goes by?", a("bikes:2", "the taxi the taxi the taxi the taxi the taxi the taxi"))),
    (B, "single_question", single("What goes by?", a("bikes:2", "A taxi passes passes passes passes passes passes "
                                                                "passes passes."))),
    (B, "single_question", single("What goes by?", a("bikes:2", "A taxi !!!!!!!!!!!!"))),
    (R, "single_question", single("What does the rabbit do?", a("bigbuckbunny:2", "It yawns hahahahahahahaha."))),
    # copied instructions, talk of segments
    (B, "single_question", single("What goes by?", a("bikes:2", "Each answer says only what its cited segments show."))),
    (B, "single_question", single("What goes by?", a("bikes:2", "This segment shows a taxi passing the camera."))),
    (B, "single_question", single("Write ONE question that a viewer asks at the very start of the video?",
                                  *_BIKES_OK)),
    (B, "single_question", single("What goes by?", a("bikes:2", "ids of the segments that show it"))),
    (F, "single_question", single("What is shown?", a("generated_four_scenes:0", "what earlier segments already showed"))),
    # multi_question garbage
    (B, "multi_question", multi(q("5.1", "bikes:0", None, a("bikes:1", "A man in a suit.")),
                                q("bikes", "bikes:3", "0.1", a("bikes:3", "A cyclist passes a van.")))),
    (B, "multi_question", multi(q("Who walks?", "bikes:0", None, a("bikes:1", "text")),
                                q("What rides?", "bikes:3", "text", a("bikes:3", "text")))),
    (R, "multi_question", multi(q("What appears?", "bigbuckbunny:0", None, a("bigbuckbunny:0", "A rabbit.")),
                                q("What next?", "bigbuckbunny:1", "]}{", a("bigbuckbunny:1", "It stretches.")))),
    (S, "multi_question", multi(
        q("What is on screen?", "generated_six_scenes:0", None,
          a("generated_six_scenes:0", "A navy-blue screen with nothing in it.")),
        q("What comes next?", "generated_six_scenes:2", "Before, a cellular automaton.",
          a("generated_six_scenes:2", "A plain blue screen.")))),
    (F, "multi_question", multi(
        q("What is moving?", "generated_four_scenes:0", None, a("generated_four_scenes:0", "question1")),
        q("What now?", "generated_four_scenes:2", None, a("generated_four_scenes:2", "answer1")))),
    # what SmolLM2-135M wrote that validated: one answer citing every segment of the video
    (B, "single_question", single("How does the bitch ride a bitch?",
                                  a([f"bikes:{i}" for i in range(6)], "The man has a bike riding behind him"))),
    (F, "single_question", single("A Fibonacci sequence with reflection reflections",
                                  a("generated_four_scenes:2", "red,green,blue_gradient_fractal_s0003"))),
    # one bad answer among good ones spoils the dialogue
    (B, "single_question", single("What kinds of traffic go by on this street?",
                                  a("bikes:2", "A taxi passes so close that only its roof is in view."),
                                  a("bikes:3", "]}{"),
                                  a("bikes:4", "Behind a railing, cars drive down a street of brick houses."))),
    (R, "single_question", single("What does the big rabbit do as it starts its day?",
                                  a("bigbuckbunny:0", "It crawls out of a burrow under a tree on a grassy hill."),
                                  a("bigbuckbunny:2", "The man in a dark suit walks to his car."))),
]
