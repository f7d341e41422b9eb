"""Planted-interest event generator for ``interestflow demo``, the tests and the benchmarks.

:func:`make_demo_events` writes realistic user activity (reviews, search queries, forum posts,
star-rating remarks) about consumer-product topics, with a *planted* current interest per user
that a time-decayed user vector should recover. Some users drift to a second topic part way
through the period, and about one event in ten is off-topic noise, so that recovering the
planted interest is a real test rather than a lookup.

:func:`train_test_split_by_time` is the temporal hold-out protocol of the shared evaluation
data (per user, the latest 20% of events are the test set).

Everything is built from a :class:`numpy.random.Generator`; the same ``seed`` gives identical
frames. Texts are composed from many phrase templates whose slots are filled from per-topic
vocabularies (brands, models, product types, attributes, purposes, experiences, complaints,
questions) mixed with generic review language, so no two users read alike.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["DemoData", "TOPIC_NAMES", "make_demo_events", "train_test_split_by_time"]


# --------------------------------------------------------------------------------------------
# Topic vocabularies. Brands and models are invented; product types, attributes and phrasing
# follow what people actually write about these categories.
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Topic:
    name: str
    brands: tuple[str, ...]
    models: tuple[str, ...]
    products: tuple[str, ...]
    adjectives: tuple[str, ...]
    attributes: tuple[str, ...]
    features: tuple[str, ...]
    purposes: tuple[str, ...]
    experiences: tuple[str, ...]
    complaints: tuple[str, ...]
    questions: tuple[str, ...]
    # How an item is named from (brand, model, product); books are "title format" with the
    # author given in the description instead.
    item_name: str = "{brand} {model} {product}"


def _t(*items: str) -> tuple[str, ...]:
    return tuple(items)


_TOPICS: tuple[_Topic, ...] = (
    _Topic(
        name="running shoes",
        brands=_t("Stridemax", "Pacewell", "Trailon", "Kinetra", "Veloxa", "Runbird"),
        models=_t("Tempo 3", "Glide", "Ridge 2", "Surge", "Cadence", "Summit 4"),
        products=_t("running shoes", "trail runners", "racing flats", "stability trainers",
                    "road running shoes", "running socks"),
        adjectives=_t("lightweight", "cushioned", "wide-fit", "waterproof", "carbon-plated",
                      "breathable", "zero-drop", "neutral"),
        attributes=_t("cushioning", "heel drop", "toe box", "outsole grip", "arch support",
                      "midsole foam", "heel counter", "breathability"),
        features=_t("a breathable mesh upper", "an 8 mm heel drop", "a rock plate for trails",
                    "a wide toe box", "a responsive foam midsole", "reflective heel tabs"),
        purposes=_t("marathon training", "my daily 5k", "trail runs on weekends",
                    "half marathon race day", "easy recovery runs",
                    "interval sessions at the track",
                    "a couch to 5k program", "ultra training"),
        experiences=_t("my knees stopped aching after long runs",
                       "I knocked a minute off my 10k time",
                       "no blisters even after 20 miles",
                       "they grip well on wet pavement",
                       "my calves needed a week to adjust to the lower drop",
                       "the foam still feels bouncy after 300 miles",
                       "my feet stay dry on muddy trails",
                       "I finally ran a sub two hour half marathon"),
        complaints=_t("the laces keep coming undone", "the outsole wore down after 200 miles",
                      "they run half a size small", "the tongue slides to the side on long runs"),
        questions=_t("how many miles should running shoes last",
                     "is a 10 mm drop too much for a beginner runner",
                     "should I size up for marathon training",
                     "are carbon plated shoes worth it for a 5k",
                     "trail runners or road shoes for gravel paths",
                     "how do I stop heel slip when running"),
    ),
    _Topic(
        name="espresso coffee",
        brands=_t("Baristo", "Roastwell", "Moka Verde", "Caffeluxe", "Bean Harbor", "Crema Co"),
        models=_t("Classico", "Doppio", "Lungo Pro", "Ristretto", "Aurora", "Velluto"),
        products=_t("espresso machine", "burr grinder", "espresso beans", "milk frother",
                    "tamper set", "moka pot"),
        adjectives=_t("single-origin", "dark roast", "semi-automatic", "dual-boiler",
                      "stainless steel", "medium roast", "conical burr", "manual lever"),
        attributes=_t("crema", "grind consistency", "steam wand", "portafilter", "bean freshness",
                      "shot temperature", "aroma", "roast profile"),
        features=_t("a 58 mm portafilter", "a commercial-style steam wand",
                    "beans roasted within the last week", "40 grind settings",
                    "a PID temperature controller", "tasting notes of chocolate and cherry"),
        purposes=_t("morning lattes", "pulling double shots", "making cappuccinos for guests",
                    "my home coffee bar", "iced coffee on weekends", "flat whites before work",
                    "the office kitchen", "dialing in light roasts"),
        experiences=_t("my shots finally have thick crema",
                       "the latte art is getting better every week",
                       "it dials in quickly for a 30 second shot",
                       "the milk steams silky in under a minute",
                       "the espresso tastes of chocolate with no bitterness",
                       "I stopped buying coffee at the cafe",
                       "the grinder stays quiet enough for early mornings",
                       "the cappuccinos taste like my favorite cafe"),
        complaints=_t("the drip tray fills up too fast", "the grinder retains a lot of grounds",
                      "the beans were roasted months ago",
                      "the steam wand takes forever to heat up"),
        questions=_t("what grind size works for a moka pot",
                     "how long should an espresso shot take",
                     "is a dual boiler worth it for lattes",
                     "how fresh should espresso beans be",
                     "why is my espresso sour",
                     "which milk froths best for a flat white"),
    ),
    _Topic(
        name="mechanical keyboards",
        brands=_t("Keyforge", "Clacktron", "Switchcraft", "Typewell", "Novakeys", "Lumekey"),
        models=_t("K65", "Tactile Pro", "Nomad", "Vector 75", "Quill", "Orbit TKL"),
        products=_t("mechanical keyboard", "keycap set", "switch tester", "wrist rest",
                    "hot-swap keyboard kit", "tenkeyless keyboard"),
        adjectives=_t("hot-swappable", "tenkeyless", "wireless", "RGB backlit", "low-profile",
                      "75 percent", "gasket-mounted", "PBT"),
        attributes=_t("key switches", "keycaps", "stabilizers", "typing sound", "key travel",
                      "backlight", "actuation force", "build quality"),
        features=_t("linear red switches", "doubleshot PBT keycaps", "lubed stabilizers",
                    "a gasket-mounted aluminum case", "Bluetooth and USB-C modes",
                    "per-key RGB lighting"),
        purposes=_t("coding all day", "gaming at night", "typing long reports",
                    "my home office setup", "competitive FPS games", "writing my thesis",
                    "a minimal desk setup", "travel with my laptop"),
        experiences=_t("typing feels smooth and the thock is addictive",
                       "my wrists hurt less after a full day of coding",
                       "the tactile bump makes me type faster",
                       "the spacebar stopped rattling after I lubed the stabilizers",
                       "swapping switches took five minutes without soldering",
                       "the keycaps have not gone shiny after months",
                       "the wireless connection never drops while gaming",
                       "my coworkers no longer complain about the clacking"),
        complaints=_t("the spacebar rattles out of the box", "the RGB software is buggy",
                      "the keycap legends started fading", "bluetooth pairing drops after sleep"),
        questions=_t("linear or tactile switches for programming",
                     "are hot-swappable keyboards worth it",
                     "how do I lube stabilizers",
                     "what are the quietest switches for an office",
                     "is a 75 percent layout good for coding",
                     "PBT or ABS keycaps"),
    ),
    _Topic(
        name="indoor plants",
        brands=_t("Greenleaf", "Rootbound", "Leafy Loft", "Terra Verde", "Sprout Stem",
                  "Urban Jungle"),
        models=_t("Marble Queen", "Golden", "Variegata", "Compacta", "Thai Constellation",
                  "Bambino"),
        products=_t("monstera", "pothos", "snake plant", "fiddle leaf fig", "peace lily",
                    "self-watering planter", "LED grow light"),
        adjectives=_t("low-light", "pet-friendly", "variegated", "fast-growing",
                      "drought-tolerant", "air-purifying", "hanging", "low-maintenance"),
        attributes=_t("leaves", "root system", "drainage", "soil mix", "new growth", "pot size",
                      "humidity needs", "watering schedule"),
        features=_t("a ceramic pot with drainage holes", "chunky aroid soil",
                    "a moss pole for climbing", "a full spectrum LED grow light",
                    "trailing vines over two feet long", "a self-watering reservoir"),
        purposes=_t("a north-facing apartment", "my bathroom shelf", "the living room corner",
                    "a beginner plant parent", "brightening my office desk", "a gift for my mom",
                    "a pet-friendly home", "my balcony in summer"),
        experiences=_t("it pushed out three new leaves this month",
                       "the leaves unfurled with beautiful fenestrations",
                       "it survived two weeks of me forgetting to water",
                       "the roots filled the pot within a season",
                       "it perked up after I moved it near the window",
                       "the variegation is even stronger under the grow light",
                       "no yellow leaves since I switched to chunky soil",
                       "my cat ignores it completely"),
        complaints=_t("it arrived with a few brown leaf tips", "fungus gnats came with the soil",
                      "the pot had no drainage hole", "a leaf snapped during shipping"),
        questions=_t("how often should I water a snake plant",
                     "why are my monstera leaves turning yellow",
                     "what soil mix for pothos",
                     "do grow lights work for a fiddle leaf fig",
                     "which houseplants are safe for cats",
                     "when should I repot a peace lily"),
    ),
    _Topic(
        name="camping gear",
        brands=_t("Summitline", "Northpeak", "Trailhaven", "Campfire Co", "Ridgeback Outdoor",
                  "Alpenglow"),
        models=_t("Basecamp 2", "Ultralite", "Ranger", "Sierra", "Backcountry", "Wanderer"),
        products=_t("backpacking tent", "sleeping bag", "camp stove", "sleeping pad", "headlamp",
                    "trekking poles", "camping hammock"),
        adjectives=_t("ultralight", "waterproof", "3-season", "insulated", "freestanding",
                      "packable", "20 degree", "two-person"),
        attributes=_t("rain fly", "packed weight", "zippers", "warmth rating", "setup time",
                      "insulation", "burn time", "floor material"),
        features=_t("a full coverage rain fly", "a packed weight under two pounds",
                    "20 degree down fill", "a built-in piezo igniter", "an R-value of 4.2",
                    "aluminum poles and stakes"),
        purposes=_t("backpacking trips", "car camping with the kids",
                    "a week on the Appalachian Trail", "cold nights in the mountains",
                    "festival weekends", "solo overnight hikes", "canoe trips",
                    "camping at the lake"),
        experiences=_t("it stayed dry through a night of heavy rain",
                       "I slept warm even when it dropped below freezing",
                       "setup took less than five minutes in the dark",
                       "it boiled water in three minutes at altitude",
                       "my pack weight dropped by two pounds",
                       "the pad kept me off the cold ground all night",
                       "the wind did not budge it on an exposed ridge",
                       "the headlamp lasted the whole trip on one charge"),
        complaints=_t("condensation builds up on the inner walls",
                      "the zipper snagged on the first night", "the stuff sack is too small",
                      "the stove sputters in the wind"),
        questions=_t("what temperature rating sleeping bag for fall camping",
                     "freestanding or trekking pole tent",
                     "how to reduce condensation in a tent",
                     "best stove fuel for high altitude",
                     "is a sleeping pad R-value of 3 enough",
                     "how heavy should a backpacking tent be"),
    ),
    _Topic(
        name="baby products",
        brands=_t("Little Nest", "Cuddlebug", "Tinysteps", "Bloom Baby", "Snugglepod",
                  "Happy Crib"),
        models=_t("Cozy", "Dream", "Travel Lite", "Soothe", "First Steps", "Comfort Plus"),
        products=_t("stroller", "baby carrier", "crib mattress", "baby monitor", "diaper bag",
                    "high chair", "baby bottle set"),
        adjectives=_t("lightweight", "foldable", "organic cotton", "anti-colic", "convertible",
                      "hypoallergenic", "travel-friendly", "breathable"),
        attributes=_t("harness straps", "fold mechanism", "night vision", "bottle nipples",
                      "padding", "storage basket", "cleanup", "adjustability"),
        features=_t("a one-hand fold", "organic cotton padding",
                    "a video monitor with night vision", "anti-colic vents",
                    "a reclining seat for newborns", "wipeable fabric"),
        purposes=_t("our newborn", "daily walks in the park", "a toddler who climbs everything",
                    "travel with our twins", "night feeds", "the daycare drop-off",
                    "our second baby", "a baby shower gift"),
        experiences=_t("our baby naps in it for two hours straight",
                       "the fold works with one hand while holding the baby",
                       "the night vision shows every detail in the nursery",
                       "the colic episodes dropped within a week",
                       "it fits in the trunk next to the groceries",
                       "my back no longer hurts after carrying her",
                       "cleaning up after meals takes seconds",
                       "our toddler finally sleeps through the night"),
        complaints=_t("the straps are hard to adjust", "the basket is too small for a diaper bag",
                      "the monitor app disconnects at night", "the bottles leak when tilted"),
        questions=_t("what age can a baby sit in a stroller without the bassinet",
                     "best baby monitor without wifi",
                     "how many bottles does a newborn need",
                     "when should we switch to a convertible car seat",
                     "is a firm crib mattress safe",
                     "which carrier is best for a newborn"),
    ),
    _Topic(
        name="video games",
        brands=_t("Pixelforge", "Nightowl Studios", "Arcadia", "Questline", "Voxel Works",
                  "Red Comet"),
        models=_t("Chronicles", "Legends", "Odyssey", "Frontier", "Shadowfall", "Starbound"),
        products=_t("open-world RPG", "co-op shooter", "racing game", "strategy game",
                    "game controller", "gaming headset", "platformer"),
        adjectives=_t("open-world", "multiplayer", "co-op", "story-driven", "competitive",
                      "indie", "next-gen", "roguelike"),
        attributes=_t("storyline", "frame rate", "boss fights", "matchmaking", "graphics",
                      "controls", "soundtrack", "side quests"),
        features=_t("a 60 hour main campaign", "four-player online co-op",
                    "ray-traced graphics", "a branching storyline", "cross-platform multiplayer",
                    "hall effect thumbsticks"),
        purposes=_t("weekend gaming sessions", "playing co-op with friends",
                    "long flights on the handheld", "ranked matches", "speedrunning",
                    "relaxing after work", "game night with my brother", "streaming on Twitch"),
        experiences=_t("I sank 80 hours into it and still found new side quests",
                       "the boss fights kept me on the edge of my seat",
                       "it runs at a steady 60 fps on my console",
                       "matchmaking found a lobby in seconds",
                       "the soundtrack gives me chills",
                       "the co-op campaign is the most fun we had this year",
                       "the controls feel tight and responsive",
                       "the story twist at the end got me"),
        complaints=_t("the servers crashed on launch weekend", "microtransactions are everywhere",
                      "the frame rate dips in big cities", "the final chapter feels rushed"),
        questions=_t("is the open world worth it for solo players",
                     "best co-op games for two players",
                     "does the game support cross-play",
                     "how long is the main story",
                     "which controller has the least stick drift",
                     "what graphics settings for 60 fps"),
    ),
    _Topic(
        name="skincare",
        brands=_t("Dermaglow", "Pure Petal", "Luminessa", "Clearday", "Velvet Skin", "Aquaveil"),
        models=_t("Hydra", "Renew", "Calm", "Radiance", "Barrier Repair", "Daily Defense"),
        products=_t("moisturizer", "vitamin C serum", "sunscreen", "gentle cleanser",
                    "retinol cream", "hyaluronic acid serum", "face toner"),
        adjectives=_t("fragrance-free", "non-comedogenic", "SPF 50", "hydrating", "oil-free",
                      "gentle", "brightening", "mineral"),
        attributes=_t("texture", "scent", "absorption", "finish", "ingredient list",
                      "pump bottle", "white cast", "hydration"),
        features=_t("2 percent hyaluronic acid", "ceramides and niacinamide",
                    "broad spectrum SPF 50", "15 percent vitamin C", "a lightweight gel texture",
                    "encapsulated retinol"),
        purposes=_t("my dry sensitive skin", "an oily T-zone", "daily sun protection",
                    "fading acne scars", "wearing under makeup", "a nighttime routine",
                    "winter dryness", "rosacea-prone skin"),
        experiences=_t("my skin stays hydrated all day without feeling greasy",
                       "the dark spots faded after six weeks",
                       "it leaves no white cast on my skin",
                       "my redness calmed down within days",
                       "no breakouts since I added it to my routine",
                       "it sinks in fast under makeup",
                       "my fine lines look softer in the morning",
                       "my skin barrier finally feels repaired after winter"),
        complaints=_t("it pilled under my foundation", "the scent is too strong",
                      "it stung around my eyes", "the pump broke halfway through the bottle"),
        questions=_t("can I use retinol and vitamin C together",
                     "what SPF for daily use under makeup",
                     "best moisturizer for oily acne-prone skin",
                     "how long does it take for a serum to work",
                     "is niacinamide good for redness",
                     "should toner go before serum"),
    ),
    _Topic(
        name="guitars and music gear",
        brands=_t("Fretwell", "Tonecraft", "Harmonix Audio", "Stringway", "Bluebird Guitars",
                  "Ampworks"),
        models=_t("Stratos", "Songbird", "Deluxe 20", "Jazzline", "Dreadnought D5", "Overdrive"),
        products=_t("acoustic guitar", "electric guitar", "practice amp", "guitar strings",
                    "overdrive pedal", "clip-on tuner", "capo"),
        adjectives=_t("solid top", "beginner-friendly", "tube", "nickel-wound", "humbucker",
                      "3/4 size", "true bypass", "vintage"),
        attributes=_t("tone", "action", "intonation", "fretboard", "pickups", "tuning stability",
                      "neck profile", "sustain"),
        features=_t("a solid spruce top", "alnico humbucker pickups", "a 20 watt tube amp",
                    "nickel-wound 10 gauge strings", "a rosewood fretboard",
                    "true bypass switching"),
        purposes=_t("learning chords at home", "playing in a cover band",
                    "practicing scales every night", "recording songs in my bedroom",
                    "open mic nights", "jamming with friends", "fingerstyle arrangements",
                    "a teenager learning guitar"),
        experiences=_t("the action was low and easy to play right out of the box",
                       "the tone is warm and full even unplugged",
                       "it stays in tune for weeks",
                       "the pedal adds crunch without losing clarity",
                       "my barre chords finally ring clean",
                       "the amp sounds great at bedroom volume",
                       "the sustain on the neck pickup is gorgeous",
                       "I practice more because it is so fun to play"),
        complaints=_t("the frets had sharp edges", "the pedal hums with my amp",
                      "the strings went dead after two weeks", "the input jack was loose"),
        questions=_t("what string gauge for a beginner acoustic guitar",
                     "how do I lower the action on my guitar",
                     "tube or solid state practice amp",
                     "which overdrive pedal for blues",
                     "how often should I change guitar strings",
                     "is a 3/4 size guitar good for adults"),
    ),
    _Topic(
        name="fantasy books",
        brands=_t("Elena Marsh", "R. T. Holloway", "Ines Varga", "Tobias Crane", "Mira Okonkwo",
                  "Aldric Vale"),
        models=_t("Ember Throne", "Shadows of Veyl", "Glass Kingdom", "Crown of Ash",
                  "Last Wyvern", "Tides of Sorrow", "Sword of Morrow", "Starfall Saga"),
        products=_t("paperback", "hardcover", "ebook", "audiobook", "box set",
                    "special edition"),
        adjectives=_t("epic", "grimdark", "cozy", "standalone", "slow-burn", "high fantasy",
                      "dragon", "magic school"),
        attributes=_t("worldbuilding", "magic system", "pacing", "character arcs", "prose",
                      "plot twists", "narration", "ending"),
        features=_t("a hard magic system", "a map of the seven kingdoms", "a found-family cast",
                    "a morally grey hero", "dragons and court intrigue",
                    "a full-cast audiobook narration"),
        purposes=_t("my book club", "long train commutes", "a rainy weekend",
                    "reading before bed", "fans of epic fantasy", "listening on my commute",
                    "a gift for my nephew", "summer vacation reading"),
        experiences=_t("I stayed up until 3 am to finish it",
                       "the magic system is clever and consistent",
                       "the worldbuilding pulled me in from the first chapter",
                       "I cried at the ending",
                       "the narrator does every voice perfectly",
                       "I immediately ordered the sequel",
                       "the plot twist in part two floored me",
                       "the characters feel like old friends now"),
        complaints=_t("the middle drags for a hundred pages", "the map is too small to read",
                      "the romance subplot felt forced", "the cliffhanger ending was frustrating"),
        questions=_t("what to read after finishing the trilogy",
                     "is the fantasy series finished yet",
                     "good standalone fantasy novels",
                     "which fantasy books have a hard magic system",
                     "should I read the prequel novel first",
                     "any cozy fantasy recommendations"),
        item_name="{model} {product}",
    ),
    _Topic(
        name="road cycling",
        brands=_t("Velocita", "Spokeline", "Cadenza Cycles", "Roadrunner Bikes", "Chainset",
                  "Aerowing"),
        models=_t("Sprint", "Endurance", "Gravel X", "Climber", "Aero 2", "Tourer"),
        products=_t("road bike", "bike helmet", "cycling shoes", "bike computer",
                    "bike light set", "cycling jersey", "bike saddle"),
        adjectives=_t("carbon", "aero", "clipless", "tubeless-ready", "gravel", "featherweight",
                      "endurance", "GPS"),
        attributes=_t("frame stiffness", "gearing", "brakes", "saddle comfort", "ventilation",
                      "battery life", "shifting", "tire clearance"),
        features=_t("hydraulic disc brakes", "an 11-speed groupset", "a carbon fork",
                    "MIPS protection", "GPS with turn-by-turn navigation",
                    "a 1000 lumen front light"),
        purposes=_t("my daily commute by bike", "century rides", "weekend group rides",
                    "gravel adventures", "hill climbing", "indoor trainer sessions",
                    "my first triathlon", "bikepacking trips"),
        experiences=_t("shifting is crisp even under load on climbs",
                       "I finished my first century without numbness",
                       "it feels fast and stable on descents",
                       "my average speed went up by two kilometers an hour",
                       "the helmet keeps my head cool on hot climbs",
                       "the computer never lost GPS in the hills",
                       "the light makes me visible to cars at night",
                       "my bike commute is ten minutes shorter"),
        complaints=_t("the saddle gave me numbness after 50 miles", "the brakes squeal in the rain",
                      "the cleats were hard to clip out of", "the battery died mid ride"),
        questions=_t("what tire pressure for road cycling",
                     "carbon or aluminum frame for a beginner cyclist",
                     "how to stop saddle numbness",
                     "clipless pedals for commuting",
                     "what gearing for steep hills on a road bike",
                     "is a bike computer worth it"),
    ),
    _Topic(
        name="home baking",
        brands=_t("Flour Hearth", "Bakewell", "Golden Crumb", "Oven Craft", "Rise Kitchen",
                  "Sweet Mill"),
        models=_t("Artisan", "Classic", "Pro Series", "Heritage", "Everyday", "Signature"),
        products=_t("stand mixer", "sourdough starter kit", "cast iron dutch oven",
                    "baking sheet set", "bread flour", "proofing basket", "kitchen scale"),
        adjectives=_t("nonstick", "high-protein", "5-quart", "enameled", "unbleached", "digital",
                      "silicone", "heavy-duty"),
        attributes=_t("crumb", "crust", "rise", "mixing power", "oven spring", "bowl size",
                      "heat distribution", "dough hydration"),
        features=_t("a 5-quart stainless bowl", "unbleached high-protein flour",
                    "an enameled cast iron lid", "a banneton with linen liner",
                    "a scale accurate to one gram", "heavy-gauge aluminized steel"),
        purposes=_t("weekend sourdough loaves", "holiday cookies", "birthday cakes for the kids",
                    "baking bread every week", "pizza night", "learning to make croissants",
                    "batch baking muffins", "my grandmother's cinnamon rolls"),
        experiences=_t("my sourdough finally has an open crumb and crackly crust",
                       "the cookies bake evenly with no burnt bottoms",
                       "the dough kneads in minutes instead of by hand",
                       "I got amazing oven spring on the first loaf",
                       "the cakes release cleanly every time",
                       "the starter doubled in six hours",
                       "my pizza crust is crisp and airy",
                       "measuring by weight made my bread consistent"),
        complaints=_t("the mixer walks across the counter on stiff dough",
                      "the nonstick coating started to flake", "the flour had clumps",
                      "the scale turns itself off too fast"),
        questions=_t("how to get a more open crumb in sourdough",
                     "what hydration for a beginner sourdough",
                     "stand mixer or hand kneading for bread",
                     "why do my cookies spread too much",
                     "do I need a dutch oven for bread",
                     "bread flour or all purpose for pizza dough"),
    ),
)

#: Names of every available topic, in the order ``make_demo_events`` takes them.
TOPIC_NAMES: tuple[str, ...] = tuple(t.name for t in _TOPICS)

# Generic review language shared by all topics.
_OPINIONS = _t("excellent", "fantastic", "solid", "fine for the price", "a bit disappointing",
               "better than I expected", "just okay", "outstanding", "surprisingly good",
               "not great", "decent", "top notch", "mediocre", "impressive", "worth every penny",
               "honestly perfect")
_PRAISE = _t("Great", "Excellent", "Solid", "Decent", "Fantastic", "Lovely", "Reliable",
             "Mediocre", "Disappointing", "Good", "Nice", "Sturdy", "Okay")
_TIMES = _t("after two weeks", "after a month", "so far", "after three months of daily use",
            "after the first week", "after half a year", "since Christmas",
            "over the last few weeks", "since spring", "after a long weekend")
_PEOPLE = _t("my wife", "my husband", "my brother", "my sister", "my roommate", "a coworker",
             "my dad", "my best friend", "my daughter", "my son", "my neighbor", "my mom")
_FILLERS = _t("Shipping was quick.", "Arrived two days early.", "The packaging could be better.",
              "Would buy again.", "Price was fair for what you get.",
              "Customer service answered within a day.",
              "The first one arrived damaged but the replacement was fine.", "Got it on sale.",
              "This is the second one I have bought.", "Highly recommend.",
              "Not sure it is worth full price.", "Instructions were clear.",
              "Will update this review later.", "Exactly as described.",
              "Ordered a spare just in case.", "Delivery was slower than promised.",
              "Happy with the purchase overall.", "Returned the first one, kept this one.")
_PRICES = _t("20", "25", "30", "40", "50", "60", "75", "100", "150", "200")
_YEARS = _t("2023", "2024", "2025")

# Phrase templates. Slots: {item} (the referenced item's name), {brand} {model} {product} (the
# referenced item's parts), {brand2} {model2} {product2} (another item of the same topic),
# {adj} {adj2} {attribute} {attribute2} {feature} {purpose} {experience} {complaint}
# {question} (topic vocabulary), {opinion} {opinion2} {praise} {praise2} {time} {person}
# {price} {year} {stars} {stars_low} {n} {filler} (generic).
_REVIEW_SENTENCES = _t(
    "Bought the {item} for {purpose}; the {attribute} is {opinion}.",
    "I have been using the {item} for {purpose} {time} and the {attribute} is {opinion}.",
    "The {attribute} on this {product} is {opinion} and {experience}.",
    "{time}, {experience}.",
    "Honestly the {item} is {opinion} for {purpose}.",
    "Got the {item} for {person}, who needed something {adj} for {purpose}.",
    "Compared to my old {brand2} {product2}, the {attribute} is {opinion}.",
    "Only complaint: {complaint}.",
    "{complaint}, but {experience}.",
    "Perfect {product} for {purpose}.",
    "Switched from {brand2} to the {item} {time} and {experience}.",
    "If you want something {adj} for {purpose}, the {item} is it.",
    "The {attribute} took some getting used to, but {experience}.",
    "{person} tried mine and ordered the {item} the same day.",
    "It has {feature}, which matters for {purpose}.",
    "The {attribute} is {opinion}; the {attribute2} is {opinion2}.",
    "I was torn between this and the {brand2} {model2}, glad I chose the {item}.",
    "Mostly use it for {purpose} and {experience}.",
    "Wish I had bought a {adj} {product} sooner.",
    "The listing mentions {feature} and that is accurate.",
    "{experience}, and the {attribute} makes all the difference.",
    "Great value: {feature} at this price is {opinion}.",
    "Be warned that {complaint}.",
    "For {purpose} it does the job, the {attribute} is {opinion}.",
    "{praise} {product}, {experience}.",
    "Third {product} I have owned and the first with {praise2} {attribute2}.",
    "Returned my {brand2} {product2} and kept the {item}; the {attribute} is {opinion}.",
    "Took it along for {purpose} and {experience}.",
    "Not a fan of the {attribute2}, but the {attribute} is {opinion}.",
    "{person} recommended the {item} and {experience}.",
)
_QUERIES = _t(
    "best {adj} {product} under ${price}",
    "{brand} {model} vs {brand2} {model2}",
    "{product} for {purpose}",
    "{adj} {product} deals",
    "is the {brand} {model} worth it for {purpose}",
    "{brand} {product} {attribute} review",
    "cheap {adj} {product}",
    "{product} with good {attribute}",
    "{brand} {model} {product} sale",
    "{adj} {adj2} {product} {year}",
    "{brand} {model} {attribute} problems",
    "{question} {year}",
    "{product} {attribute} comparison",
    "top rated {product} for {purpose}",
    "{adj} {brand} {product} near me",
    "{brand} {model} {product} review reddit",
    "{adj} {product} under ${price} for {purpose}",
    "{brand} {model} {attribute} fix",
    "{brand2} or {brand} {product}",
    "{product} {adj} vs {adj2}",
    "how long does a {brand} {product} last",
    "{brand} {model} {product} price drop",
)
_POSTS = _t(
    "{question}? Mostly for {purpose}.",
    "Anyone tried the {item}? Looking for something {adj} for {purpose}.",
    "{question}? I am using the {item} right now and {experience}.",
    "Just picked up the {item}. {experience}!",
    "Thinking about upgrading my {product}. {question}?",
    "PSA: the {item} is on sale for ${price}, {opinion} deal.",
    "Day {n} with the {item}: {experience}.",
    "Looking for {adj} {product} recommendations for {purpose}, budget around ${price}.",
    "Does anyone else find the {attribute} on the {brand} {product} {opinion}?",
    "Update on my {product}: {experience}, though {complaint}.",
    "Hot take: the {attribute} matters more than anything else when you pick a {product}.",
    "{person} asked me what to get for {purpose} and I said the {item}.",
    "Unboxing the {item} today, first impression is that the {attribute} is {opinion}.",
    "Help: {complaint}. Is that normal for a {product}?",
    "{brand} or {brand2} for {purpose}? {question}?",
    "Finally treated myself to a {adj} {product} for {purpose}. So far {experience}.",
    "Is {feature} really necessary for {purpose}, or is that marketing?",
)
_RATINGS = _t(
    "{stars} stars. {praise} {product}.",
    "{stars}/5, the {attribute} is {opinion}.",
    "{praise} {product}, {stars} stars.",
    "{stars} stars for the {item}.",
    "{stars} out of 5 for {purpose}.",
    "Rating for the {item}: {stars}/5. {filler}",
    "{praise} {attribute}, {praise2} {product}, {stars} stars.",
    "Solid {stars} stars, {experience}.",
    "Would give the {attribute} on the {item} {stars} out of 5.",
    "{stars_low} because {complaint}.",
    "Loved the {product}, {stars}/5 for {purpose}.",
    "{praise} {adj} {product}, would recommend.",
    "{stars} stars overall, the {attribute} alone earns it.",
    "Knocked off a star because {complaint}.",
)
_ITEM_DESCRIPTIONS = _t(
    "{name}. {adj_cap} {product} with {feature}.",
    "{name}: {adj}, {adj2}, made for {purpose}.",
    "{name} with {feature} and {feature2}.",
    "{adj_cap} {adj2} {product} from {brand}. Features {feature}; great for {purpose}.",
    "{name}. {adj_cap}, with {feature}. Ideal for {purpose}.",
)
# Event kinds and their shares: reviews, search queries, posts/questions, rating remarks.
_KINDS = (_REVIEW_SENTENCES, _QUERIES, _POSTS, _RATINGS)
_KIND_CUM = np.cumsum([0.40, 0.25, 0.20, 0.15])
_N_SENT_CUM = np.cumsum([0.30, 0.35, 0.25, 0.10])   # 1..4 review sentences
_STARS = _t("3", "4", "4", "5", "5", "5")
_STARS_LOW = _t("1 star", "2 stars", "2 stars", "3 stars")

_MAX_REVIEW_WORDS = 60
_NOISE_RATE = 0.10       # share of events about a random other topic
_ITEMS_PER_TOPIC = (15, 25)
_POPULARITY_EXPONENT = 0.8   # Zipf-like popularity of items within a topic


@dataclass(frozen=True)
class DemoData:
    """A generated event set with its planted ground truth.

    Attributes
    ----------
    events : pandas.DataFrame
        Columns ``user_id`` (str, ``"u0001"``...), ``text`` (str), ``ts``
        (``datetime64[ns, UTC]``), ``item_id`` (str), ``weight`` (float, 1.0); sorted by
        user then time, timestamps strictly increasing within a user.
    items : pandas.DataFrame
        Columns ``item_id`` (str) and ``text`` (a short product description), sorted by id.
    user_topic : pandas.Series
        Indexed by ``user_id``: the planted *current* topic name (the topic of the user's
        most recent interest, which a time-decayed user vector should recover).
    topic_names : list of str
        The topics used, in catalogue order.
    item_topic : pandas.Series
        Indexed by ``item_id``: the topic name of each item. An event's topic is the topic
        of its item.
    user_initial_topic : pandas.Series
        Indexed by ``user_id``: the topic the user started with (equal to ``user_topic``
        for users who did not drift).
    drifted : pandas.Series
        Indexed by ``user_id``: True for users who switched topic part way through.
    """

    events: pd.DataFrame
    items: pd.DataFrame
    user_topic: pd.Series
    topic_names: list[str]
    item_topic: pd.Series
    user_initial_topic: pd.Series
    drifted: pd.Series


class _Draws:
    """Sequential uniform draws from a Generator, pre-drawn in chunks (fast in Python loops)."""

    __slots__ = ("_rng", "_buf", "_pos")

    def __init__(self, rng: np.random.Generator, chunk: int = 1 << 16):
        self._rng = rng
        self._buf = rng.random(chunk).tolist()
        self._pos = 0

    def u(self) -> float:
        if self._pos == len(self._buf):
            self._buf = self._rng.random(len(self._buf)).tolist()
            self._pos = 0
        x = self._buf[self._pos]
        self._pos += 1
        return x

    def pick(self, seq):
        return seq[int(self.u() * len(seq))]

    def pick_cum(self, cum) -> int:
        return int(np.searchsorted(cum, self.u() * cum[-1], side="right"))


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


_SENTENCE_START = re.compile(r"([.?!]\s+)([a-z])")
_ARTICLE = re.compile(r"\b([aA]) (?!one\b)(?=[aeiouAEIOU])")


def _cap_sentences(s: str) -> str:
    s = _ARTICLE.sub(lambda m: m.group(1) + "n ", s)
    return _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), _cap(s))


class _Item:
    __slots__ = ("item_id", "topic", "brand", "model", "product", "name", "text")

    def __init__(self, item_id, topic, brand, model, product, name, text):
        self.item_id, self.topic, self.brand, self.model = item_id, topic, brand, model
        self.product, self.name, self.text = product, name, text


def _make_items(topics: list[_Topic], rng: np.random.Generator) -> list[list[_Item]]:
    d = _Draws(rng, chunk=4096)
    lo, hi = _ITEMS_PER_TOPIC
    per_topic: list[list[tuple]] = []
    for topic in topics:
        n = int(rng.integers(lo, hi + 1))
        grid = [(b, m, p) for b in topic.brands for m in topic.models for p in topic.products]
        chosen = rng.choice(len(grid), size=n, replace=False)
        per_topic.append([grid[i] for i in chosen])
    total = sum(len(x) for x in per_topic)
    # Ids carry no information about the topic: a random permutation assigns them.
    ids = [f"i{k:04d}" for k in rng.permutation(total) + 1]
    out: list[list[_Item]] = []
    k = 0
    for topic, parts in zip(topics, per_topic):
        items = []
        for brand, model, product in parts:
            name = topic.item_name.format(brand=brand, model=model, product=product)
            adj = d.pick(topic.adjectives)
            adj2 = d.pick([a for a in topic.adjectives if a != adj])
            feature = d.pick(topic.features)
            feature2 = d.pick([f for f in topic.features if f != feature])
            text = d.pick(_ITEM_DESCRIPTIONS).format(
                name=name, adj=adj, adj2=adj2, adj_cap=_cap(adj), product=product,
                feature=feature, feature2=feature2, purpose=d.pick(topic.purposes),
                brand=brand)
            if topic.item_name == "{model} {product}":
                text += f" By {brand}."
            items.append(_Item(ids[k], topic.name, brand, model, product, _cap(name), text))
            k += 1
        out.append(items)
    return out


def _slots(d: _Draws, topic: _Topic, item: _Item) -> dict:
    other = d.pick(topic.brands), d.pick(topic.models), d.pick(topic.products)
    attribute = d.pick(topic.attributes)
    opinion = d.pick(_OPINIONS)
    praise = d.pick(_PRAISE)
    return {
        "item": item.name, "brand": item.brand, "model": item.model, "product": item.product,
        "brand2": other[0] if other[0] != item.brand else d.pick(topic.brands),
        "model2": other[1], "product2": other[2],
        "adj": d.pick(topic.adjectives), "adj2": d.pick(topic.adjectives),
        "attribute": attribute,
        "attribute2": d.pick([a for a in topic.attributes if a != attribute]),
        "feature": d.pick(topic.features), "purpose": d.pick(topic.purposes),
        "experience": d.pick(topic.experiences), "complaint": d.pick(topic.complaints),
        "question": d.pick(topic.questions),
        "opinion": opinion, "opinion2": d.pick([o for o in _OPINIONS if o != opinion]),
        "praise": praise, "praise2": d.pick(_PRAISE).lower(),
        "time": d.pick(_TIMES), "person": d.pick(_PEOPLE), "price": d.pick(_PRICES),
        "year": d.pick(_YEARS), "stars": d.pick(_STARS), "stars_low": d.pick(_STARS_LOW),
        "n": str(1 + int(d.u() * 60)), "filler": d.pick(_FILLERS),
    }


def _make_text(d: _Draws, topic: _Topic, item: _Item) -> str:
    kind = d.pick_cum(_KIND_CUM)
    if kind == 0:  # review: 1-4 sentences, fresh slots each, optional filler and star prefix
        n_sent = d.pick_cum(_N_SENT_CUM) + 1
        idx: list[int] = []
        while len(idx) < n_sent:
            j = int(d.u() * len(_REVIEW_SENTENCES))
            if j not in idx:
                idx.append(j)
        parts = [_REVIEW_SENTENCES[j].format(**_slots(d, topic, item)) for j in idx]
        if d.u() < 0.4:
            parts.insert(int(d.u() * (len(parts) + 1)), d.pick(_FILLERS))
        if d.u() < 0.15:
            parts.insert(0, f"{d.pick(_STARS)} stars.")
        # Keep reviews to about 60 words, as most short-form reviews are.
        while len(parts) > 1 and sum(len(p.split()) for p in parts) > _MAX_REVIEW_WORDS:
            parts.pop()
        return _cap_sentences(" ".join(parts))
    slots = _slots(d, topic, item)
    if kind == 1:  # search query: lower case, no punctuation
        return d.pick(_QUERIES).format(**slots).lower()
    return _cap_sentences(d.pick(_KINDS[kind]).format(**slots))


def _parse_start(start) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(start)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"start={start!r} is not a date; pass an ISO date string such as '2024-01-01' or "
            "a datetime") from exc
    if ts is pd.NaT:
        raise ValueError(f"start={start!r} is not a date; pass an ISO date such as '2024-01-01'")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name}={value} is invalid; pass {name} >= {minimum}")
    return int(value)


def make_demo_events(
    n_users: int = 400,
    *,
    n_topics: int = 8,
    events_per_user: tuple[int, int] = (8, 20),
    start="2024-01-01",
    days: float = 180,
    drift_fraction: float = 0.25,
    seed: int = 0,
) -> DemoData:
    """Generate realistic user events with a planted, partly drifting interest per user.

    Each user has a primary topic (topics are dealt out evenly, then shuffled). A share
    ``drift_fraction`` of users switches to a second topic part way through their history
    (after 40-70% of their events), so their planted current topic is the second one. About
    10% of events, never a user's last one, are off-topic noise about a random other topic.
    Every event references an item of the topic it talks about (popular items are referenced
    more often) and its text is a review, a search query, a forum post/question or a star
    rating remark built from phrase templates (3 to about 60 words).

    Parameters
    ----------
    n_users : int, default 400
        Number of users, ids ``"u0001"``... (zero-padded to at least 4 digits).
    n_topics : int, default 8
        Number of topics, taken in catalogue order from :data:`TOPIC_NAMES` (12 available).
    events_per_user : (int, int), default (8, 20)
        Inclusive range of the number of events per user (uniform). Drifted users get at
        least 2 events.
    start : str or datetime-like, default "2024-01-01"
        Start of the period (naive values are taken as UTC).
    days : float, default 180
        Length of the period; each user is active in a random window inside it.
    drift_fraction : float, default 0.25
        Share of users (rounded) whose interest switches to a second topic. Needs
        ``n_topics >= 2`` when positive.
    seed : int, default 0
        Seed of the :class:`numpy.random.Generator`; same seed, same data. Items depend on
        the seed and ``n_topics`` only, not on ``n_users``.

    Returns
    -------
    DemoData
        ``events`` (n_events rows), ``items``, ``user_topic`` (n_users,), ``topic_names``,
        ``item_topic``, ``user_initial_topic``, ``drifted``.

    Examples
    --------
    >>> from interestflow.synthetic import make_demo_events
    >>> data = make_demo_events(50, n_topics=4, seed=1)
    >>> data.events.columns.tolist()
    ['user_id', 'text', 'ts', 'item_id', 'weight']
    >>> len(data.user_topic)
    50
    """
    n_users = _check_int("n_users", n_users, 1)
    n_topics = _check_int("n_topics", n_topics, 1)
    if n_topics > len(_TOPICS):
        raise ValueError(
            f"n_topics={n_topics} exceeds the {len(_TOPICS)} available topics "
            f"({', '.join(TOPIC_NAMES)}); pass n_topics <= {len(_TOPICS)}")
    seed = _check_int("seed", seed, 0)
    if (not isinstance(events_per_user, (tuple, list)) or len(events_per_user) != 2):
        raise TypeError(
            f"events_per_user must be a (min, max) pair of ints, got {events_per_user!r}")
    lo = _check_int("events_per_user[0]", events_per_user[0], 1)
    hi = _check_int("events_per_user[1]", events_per_user[1], 1)
    if hi < lo:
        raise ValueError(f"events_per_user={tuple(events_per_user)} has max < min; "
                         "pass (min, max) with min <= max")
    if isinstance(days, bool) or not isinstance(days, (int, float, np.integer, np.floating)):
        raise TypeError(f"days must be a number, got {type(days).__name__} ({days!r})")
    if not (math.isfinite(days) and days > 0):
        raise ValueError(f"days={days} is invalid; pass a finite number of days > 0")
    if isinstance(drift_fraction, bool) or not isinstance(
            drift_fraction, (int, float, np.integer, np.floating)):
        raise TypeError(f"drift_fraction must be a number in [0, 1], got {drift_fraction!r}")
    if not 0.0 <= float(drift_fraction) <= 1.0:
        raise ValueError(
            f"drift_fraction={drift_fraction} is invalid; pass 0 <= drift_fraction <= 1")
    n_drift = int(math.floor(float(drift_fraction) * n_users + 0.5))
    if n_drift > 0 and n_topics < 2:
        raise ValueError(
            f"drift_fraction={drift_fraction} needs at least two topics to drift between, "
            f"got n_topics={n_topics}; pass n_topics >= 2 or drift_fraction=0")
    if n_drift > 0 and hi < 2:
        raise ValueError(
            f"drift_fraction={drift_fraction} needs users with at least 2 events, got "
            f"events_per_user={tuple(events_per_user)}; raise the maximum or pass drift_fraction=0")
    t0 = _parse_start(start)

    topics = list(_TOPICS[:n_topics])
    item_ss, user_ss, text_ss = np.random.SeedSequence([seed, n_topics]).spawn(3)
    items = _make_items(topics, np.random.default_rng(item_ss))
    pop_cum = []
    for its in items:
        w = 1.0 / np.arange(1, len(its) + 1) ** _POPULARITY_EXPONENT
        pop_cum.append(np.cumsum(w))

    # Users: primary topics dealt evenly then shuffled; drift users and their second topic.
    rng = np.random.default_rng(user_ss)
    primary = rng.permutation(np.arange(n_users) % n_topics)
    drift_users = np.zeros(n_users, dtype=bool)
    drift_users[rng.choice(n_users, size=n_drift, replace=False)] = True
    # The second topic is uniform over the other topics.
    second = (primary + rng.integers(1, max(n_topics, 2), size=n_users)) % n_topics
    n_events = rng.integers(lo, hi + 1, size=n_users)
    n_events[drift_users] = np.maximum(n_events[drift_users], 2)
    switch_frac = rng.uniform(0.4, 0.7, size=n_users)
    period_s = float(days) * 86400.0
    win_start = rng.uniform(0.0, 0.3, size=n_users) * period_s
    win_end = period_s - rng.uniform(0.0, 0.2, size=n_users) * period_s
    width = max(4, len(str(n_users)))
    user_ids = [f"u{i:0{width}d}" for i in range(1, n_users + 1)]

    d = _Draws(np.random.default_rng(text_ss))
    col_user, col_text, col_item, col_ts = [], [], [], []
    t0_ns = t0.value
    current = np.where(drift_users, second, primary)
    for u in range(n_users):
        n = int(n_events[u])
        offs = np.sort(rng.uniform(win_start[u], win_end[u], size=n)).astype(np.int64)
        # Whole seconds, strictly increasing within the user (bump ties by one second).
        steps = np.arange(n, dtype=np.int64)
        offs = np.maximum.accumulate(offs - steps) + steps
        k_switch = n
        if drift_users[u]:
            k_switch = min(max(1, int(round(switch_frac[u] * n))), n - 1)
        uid = user_ids[u]
        for j in range(n):
            t = int(primary[u] if j < k_switch else second[u])
            if j < n - 1 and n_topics > 1 and d.u() < _NOISE_RATE:
                t = (t + 1 + int(d.u() * (n_topics - 1))) % n_topics
            item = items[t][d.pick_cum(pop_cum[t])]
            col_user.append(uid)
            col_text.append(_make_text(d, topics[t], item))
            col_item.append(item.item_id)
            col_ts.append(t0_ns + int(offs[j]) * 1_000_000_000)

    events = pd.DataFrame({
        "user_id": pd.array(col_user, dtype="str"),
        "text": pd.array(col_text, dtype="str"),
        "ts": pd.to_datetime(np.asarray(col_ts, dtype=np.int64), unit="ns", utc=True)
        .astype("datetime64[ns, UTC]"),
        "item_id": pd.array(col_item, dtype="str"),
        "weight": np.ones(len(col_user), dtype=np.float64),
    })
    flat = sorted((it for its in items for it in its), key=lambda it: it.item_id)
    items_df = pd.DataFrame({
        "item_id": pd.array([it.item_id for it in flat], dtype="str"),
        "text": pd.array([it.text for it in flat], dtype="str"),
    })
    names = [t.name for t in topics]
    uidx = pd.Index(user_ids, name="user_id", dtype="str")
    return DemoData(
        events=events,
        items=items_df,
        user_topic=pd.Series([names[t] for t in current], index=uidx, name="topic", dtype="str"),
        topic_names=names,
        item_topic=pd.Series([it.topic for it in flat],
                             index=pd.Index([it.item_id for it in flat], name="item_id",
                                            dtype="str"),
                             name="topic", dtype="str"),
        user_initial_topic=pd.Series([names[t] for t in primary], index=uidx,
                                     name="topic", dtype="str"),
        drifted=pd.Series(drift_users, index=uidx, name="drifted"),
    )


def train_test_split_by_time(events: pd.DataFrame, frac: float = 0.2):
    """Hold out each user's latest events: the temporal protocol of the evaluation data.

    Per user, events are sorted by ``ts`` (ties keep their input order) and the last
    ``max(1, round(frac * n))`` of the user's ``n`` events (rounded half up) form the test
    set, so a user with a single event has it in the test set only.

    Parameters
    ----------
    events : pandas.DataFrame
        At least the columns ``user_id`` and ``ts`` (any sortable, non-null values).
    frac : float, default 0.2
        Share of each user's events to hold out, ``0 < frac < 1``.

    Returns
    -------
    train, test : pandas.DataFrame
        The rows of ``events`` (original index kept), each sorted by user then time.

    Examples
    --------
    >>> import pandas as pd
    >>> ev = pd.DataFrame({"user_id": ["a"] * 5, "ts": [5, 1, 4, 2, 3]})
    >>> train, test = train_test_split_by_time(ev)
    >>> test["ts"].tolist(), train["ts"].tolist()
    ([5], [1, 2, 3, 4])
    """
    if not isinstance(events, pd.DataFrame):
        raise TypeError(f"events must be a pandas DataFrame, got {type(events).__name__}")
    missing = [c for c in ("user_id", "ts") if c not in events.columns]
    if missing:
        raise ValueError(
            f"events is missing column(s) {missing}; it has {list(events.columns)}")
    if isinstance(frac, bool) or not isinstance(frac, (int, float, np.integer, np.floating)):
        raise TypeError(f"frac must be a number in (0, 1), got {frac!r}")
    if not 0.0 < float(frac) < 1.0:
        raise ValueError(f"frac={frac} is invalid; pass 0 < frac < 1")
    for col in ("user_id", "ts"):
        nulls = events[col].isna().to_numpy()
        if nulls.any():
            row = events.index[int(np.argmax(nulls))]
            raise ValueError(
                f"events[{col!r}] is null at row {row!r} ({int(nulls.sum())} null rows); "
                f"every event needs a {col}")
    order = events.sort_values(["user_id", "ts"], kind="stable")
    grp = order.groupby("user_id", sort=False, observed=True)
    size = grp["ts"].transform("size").to_numpy()
    from_end = grp.cumcount(ascending=False).to_numpy()
    n_test = np.maximum(1, np.floor(float(frac) * size + 0.5)).astype(np.int64)
    is_test = from_end < n_test
    return order[~is_test], order[is_test]
