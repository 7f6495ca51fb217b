"""Results used again: the text and ablation a result was made with (:mod:`.recorded`), its run
folder read back and checked (:mod:`.runfolder`), masked generations (:mod:`.generation`) and the
tamper check of a deployed model (:mod:`.verify`)."""
