"""Corpus BLEU and chrF of generated translations, computed by the ``sacrebleu`` package, as an evaluate module.

Scores are sacreBLEU's own (0-100, default tokenisation 13a for BLEU, chrF with character n-grams up to 6 and
beta 2: signature ``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.x`` and
``nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no``); one reference per prediction.
"""

import datasets
import evaluate
import sacrebleu as scb

_KWARGS = """
Args:
    predictions: list of generated translations
    references: list of reference translations (one per prediction)
    tokenize: sacreBLEU tokenizer for BLEU (default 13a; "zh", "ja-mecab", "char" ... for other scripts)
    lowercase: case-insensitive BLEU (default False)
"""


class SacreBleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="sacreBLEU corpus BLEU and chrF (0-100).",
            citation="Post, A Call for Clarity in Reporting BLEU Scores, WMT 2018; Popovic, chrF, WMT 2015",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, tokenize="13a", lowercase=False):
        preds, refs = list(predictions), [list(references)]
        bleu = scb.corpus_bleu(preds, refs, tokenize=tokenize, lowercase=lowercase)
        chrf = scb.corpus_chrf(preds, refs)
        return {"bleu": float(bleu.score), "chrf": float(chrf.score), "bleu_brevity_penalty": float(bleu.bp)}
