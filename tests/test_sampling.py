"""trainer.group_order=shuffled: the library's length-grouped batches, visited in a random order."""

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from pipeline.training.sampling import ShuffledLengthGroupedSampler, with_group_order

LENGTHS = [int(x) for x in torch.randint(1, 120, (1003,), generator=torch.Generator().manual_seed(1))]
BATCH = 8  # 1003 = 125 full batches + a partial one of 3


def _batches(sampler_class, seed=0):
    order = list(sampler_class(BATCH, lengths=LENGTHS, generator=torch.Generator().manual_seed(seed)))
    assert sorted(order) == list(range(len(LENGTHS)))  # every sample once
    return [order[i:i + BATCH] for i in range(0, len(order), BATCH)]


def test_same_batches_in_another_order():
    library, shuffled = _batches(LengthGroupedSampler), _batches(ShuffledLengthGroupedSampler)
    assert sorted(map(sorted, library)) == sorted(map(sorted, shuffled))  # the same groups: padding unchanged
    assert shuffled[0] == library[0] and max(LENGTHS[i] for i in shuffled[0]) == max(LENGTHS)  # longest first
    assert len(shuffled[-1]) == 3 and shuffled[-1] == library[-1]  # the partial batch stays last

    def longest(batches):
        return [max(LENGTHS[i] for i in b) for b in batches[1:-1]]

    # the library runs long -> short within each mega-batch: most neighbours descend; shuffled: about half do
    def descending(x):
        return sum(a >= b for a, b in zip(x, x[1:])) / (len(x) - 1)

    assert descending(longest(library)) > 0.9 and 0.3 < descending(longest(shuffled)) < 0.7


def test_order_is_a_function_of_the_seed():
    assert _batches(ShuffledLengthGroupedSampler, 3) == _batches(ShuffledLengthGroupedSampler, 3)
    assert _batches(ShuffledLengthGroupedSampler, 3) != _batches(ShuffledLengthGroupedSampler, 4)


def test_trainer_class_switch():
    import pytest
    from transformers import Trainer

    from conftest import compose
    from pipeline.stages.resolve import resolve
    from pipeline.errors import ConfigError

    assert with_group_order(Trainer, "sorted") is Trainer
    sub = with_group_order(Trainer, "shuffled")
    assert issubclass(sub, Trainer) and sub.__name__ == "Trainer"
    with pytest.raises(ConfigError, match="group_order='random': use one of shuffled, sorted"):  # before any work
        resolve(compose(["debug=smoke", "trainer.group_order=random"]))


def test_trainer_draws_batches_from_the_shuffled_sampler(tmp_path):
    from datasets import Dataset
    from transformers import BertConfig, BertForTokenClassification, Trainer, TrainingArguments

    model = BertForTokenClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                  num_attention_heads=2, intermediate_size=32, num_labels=3))
    data = Dataset.from_dict({"input_ids": [[1] * n for n in LENGTHS[:64]]})
    args = TrainingArguments(output_dir=str(tmp_path), train_sampling_strategy="group_by_length",
                             per_device_train_batch_size=BATCH, report_to="none", use_cpu=True)
    trainer = with_group_order(Trainer, "shuffled")(model=model, args=args, train_dataset=data)
    assert type(trainer._get_train_sampler()) is ShuffledLengthGroupedSampler
    assert type(Trainer(model=model, args=args, train_dataset=data)._get_train_sampler()) is LengthGroupedSampler
