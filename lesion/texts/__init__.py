"""The texts lesion studies: the input text (:mod:`.text`: the authors' default sentence, reading,
tokenising with checks), lesion's own named texts (:mod:`.named`), corpora by name or path
(:mod:`.corpora`) and passages drawn from them (:mod:`.passages`)."""
from .._moved import names_from

__getattr__ = names_from(__name__)  # lesion 0.1's names of this path, now in lesion.texts.text
