"""Attention distillation (`train --attention-weight`): the maps, the loss, and a student that learns them."""

import numpy as np
import pytest
from conftest import run_cli
from test_train import base_encoder, save_teacher_logits, train_args, train_slice  # noqa: F401 (fixtures)
from tiny_models import build_model


def test_attention_maps_keep_each_texts_block_and_pad_batches():
    from fastsentiment.train.attention import AttentionMaps

    rng = np.random.default_rng(0)
    blocks = [rng.random((2, n, n)).astype(np.float16) for n in (3, 1, 4)]
    maps = AttentionMaps.from_blocks(2, [blocks[0], None, blocks[1], blocks[2]])
    assert list(maps.lengths) == [3, 0, 1, 4]
    np.testing.assert_array_equal(maps.block(3), blocks[2])
    padded, lengths = maps.batch([3, 1, 0], width=5)
    assert padded.shape == (3, 2, 5, 5) and list(lengths) == [4, 0, 3]
    np.testing.assert_allclose(padded[0, :, :4, :4].numpy(), blocks[2].astype(np.float32))
    assert padded[0, :, 4:].abs().sum() == 0 and padded[1].abs().sum() == 0
    aligned = maps.aligned_with([3, 0, 2, 4])  # the third text tokenises to 2 tokens for the student, not 1
    assert list(aligned.lengths) == [3, 0, 0, 4]
    np.testing.assert_array_equal(aligned.block(3), blocks[2])


def test_attention_loss_is_the_kl_over_real_positions_of_texts_with_a_map():
    import torch

    from fastsentiment.train.attention import attention_loss

    def rows(n, width, seed):  # attention rows over n real keys, padded to width (padded keys get nothing)
        weights = torch.rand(1, 2, width, n, generator=torch.Generator().manual_seed(seed))
        return torch.nn.functional.pad(weights / weights.sum(-1, keepdim=True), (0, width - n))

    teacher = rows(3, 5, 0)
    assert attention_loss(teacher, teacher, torch.tensor([3])).item() == pytest.approx(0.0, abs=1e-6)
    student = rows(3, 5, 1)
    expected = (teacher * (teacher.clamp_min(1e-12).log() - student.clamp_min(1e-12).log())).sum(-1)[0, :, :3].mean()
    assert attention_loss(student, teacher, torch.tensor([3])).item() == pytest.approx(expected.item(), rel=1e-5)
    garbage = student.clone()
    garbage[..., 3:, :] = 0.01  # padded query positions: whatever is there does not count
    assert attention_loss(garbage, teacher, torch.tensor([3])).item() == pytest.approx(expected.item(), rel=1e-5)
    none = attention_loss(student, teacher, torch.tensor([0]))  # a text without a map: nothing to learn, no NaN
    assert none.item() == 0.0


def last_layer_kl(student_dir, teacher_dir, texts) -> float:
    """Mean over texts of attention_loss between two models' last-layer attention (fp32)."""
    import torch

    from fastsentiment.models import resolve_model
    from fastsentiment.train.attention import attention_loss, teacher_attention

    cpu = torch.device("cpu")
    student = teacher_attention(resolve_model(str(student_dir)), texts, 64, cpu, "fp32")
    teacher = teacher_attention(resolve_model(str(teacher_dir)), texts, 64, cpu, "fp32")
    losses = []
    for row in range(len(texts)):
        n = int(teacher.lengths[row])
        s_maps, lengths = student.batch([row], n)
        t_maps, _ = teacher.batch([row], n)
        losses.append(attention_loss(s_maps, t_maps, lengths).item())
    return float(np.mean(losses))


def test_attention_distillation_brings_the_students_attention_to_the_teachers(train_slice, base_encoder, tmp_path):  # noqa: F811
    """A teacher of another architecture (a tiny MPNet-shaped BERT with the same heads and vocabulary, other
    weights): its maps, saved by the script or computed by the run, make the student's last-layer attention much
    closer to its own than the same training without them does."""
    from fastsentiment.train.data import read_labelled

    vocab = base_encoder / "vocab.txt"
    teacher = build_model(tmp_path / "teacher", "bert", hidden=64, layers=2, seed=7, vocab=vocab)
    saved = tmp_path / "logits.npz"
    save_teacher_logits(teacher, train_slice, saved, "--attention")
    with np.load(saved) as contents:
        assert int(contents["attention_heads"]) == 4 and len(contents["attention_lengths"]) == len(contents["logits"])
    common = ("--learning-rate", "1e-3", "--select", "last", "--epochs", "3")
    plain = tmp_path / "plain"
    result = run_cli(*train_args(train_slice, plain, base_encoder, "--teacher-logits", str(saved), *common))
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    texts = read_labelled(train_slice, label_names=["NEGATIVE", "POSITIVE"])[0].texts[:64]
    without = last_layer_kl(plain, teacher, texts)
    for source in (("--teacher-logits", str(saved)), ("--teacher", str(teacher))):
        student = tmp_path / source[0].strip("-")
        result = run_cli(*train_args(train_slice, student, base_encoder, *source, "--attention-weight", "5", *common))
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        assert "attention distillation on " in result.stderr.decode()
        distilled = last_layer_kl(student, teacher, texts)
        assert distilled < 0.5 * without, (source[0], distilled, without)
    assert "teacher attention: running" in result.stderr.decode()


def test_attention_distillation_needs_one_teacher_with_as_many_heads_and_saved_maps(train_slice, base_encoder, tmp_path):  # noqa: F811
    def fails(out, *extra, says: bytes):
        result = run_cli(*train_args(train_slice, tmp_path / out, base_encoder, "--attention-weight", "1",
                                     "--max-steps", "2", *extra))  # fmt: skip
        assert result.returncode != 0 and says in result.stderr and b"Traceback" not in result.stderr, result.stderr
    fails("a", says=b"--attention-weight needs a teacher")
    fails("b", "--teacher", str(base_encoder), "--teacher", str(base_encoder), says=b"needs one teacher")
    saved = tmp_path / "logits.npz"
    save_teacher_logits(base_encoder, train_slice, saved)
    fails("c", "--teacher-logits", str(saved), says=b"holds no attention of the teacher")
    two_heads = build_model(tmp_path / "two-heads", "bert", hidden=64, heads=2, vocab=base_encoder / "vocab.txt")
    fails("d", "--teacher", str(two_heads), says=b"the teacher has 2 attention heads, the student 4")
