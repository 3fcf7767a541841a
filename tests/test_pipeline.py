"""The whole pipeline end to end at a tiny size, its resume, and the evaluate CLI."""

import json

from kfusion.cli import main
from kfusion.config import DataConfig
from kfusion.evaluation import EvaluationConfig
from kfusion.pipeline import PipelineConfig, run_pipeline
from kfusion.training.pretrain import EncoderPretrainConfig, FusionPretrainConfig, SpeechPretrainConfig

TINY = PipelineConfig(
    data=DataConfig(modalities=("speech", "eda")),
    encoders=EncoderPretrainConfig(epochs=1, batch_size=32),
    speech=SpeechPretrainConfig(epochs=1, batch_size=32),
    fusion=FusionPretrainConfig(epochs=1, statistics=("mean", "std")),
    evaluation=EvaluationConfig(epochs=2, patience=1),
    rows=("speech_only", "unweighted_without", "unweighted_with", "handcrafted"),
    targets=("arousal",),
)


def test_pipeline_runs_end_to_end_and_resumes(kemocon_synth, tmp_path):
    source = f"kemocon:{kemocon_synth}"
    results = run_pipeline(source, source, tmp_path / "run", TINY, progress=False, verbose=0)
    assert results.complete
    folds = (tmp_path / "run" / "evaluation" / "folds.jsonl").read_text().splitlines()
    assert len(folds) == 4 * 4  # 4 rows x 4 held-out participants
    for stage in ("pretrain-encoders", "pretrain-speech", "pretrain-fusion", "evaluation"):
        assert (tmp_path / "run" / stage / "config.json").is_file(), stage
    assert json.loads((tmp_path / "run" / "config.json").read_text())["pipeline"]["rows"] == list(TINY.rows)
    table = (tmp_path / "run" / "evaluation" / "table.md").read_text()
    # A second call redoes nothing and gives the same table.
    again = run_pipeline(source, source, tmp_path / "run", TINY, progress=False, verbose=0)
    assert (tmp_path / "run" / "evaluation" / "folds.jsonl").read_text().splitlines() == folds
    assert (tmp_path / "run" / "evaluation" / "table.md").read_text() == table
    assert again.table.equals(results.table)


def test_pipeline_config_round_trip(tmp_path):
    TINY.save(tmp_path / "p.json")
    assert PipelineConfig.load(tmp_path / "p.json") == TINY


def test_evaluate_cli_with_the_shipped_models(kemocon_synth, tmp_path, capsys):
    code = main(["evaluate", "--data", f"kemocon:{kemocon_synth}", "--rows", "speech_only,handcrafted",
                 "--targets", "valence", "--out", str(tmp_path / "ev"), "--no-cache"])
    assert code == 0
    out = capsys.readouterr().out
    assert "Speech only" in out and "Hand-crafted" in out
    assert (tmp_path / "ev" / "table.csv").is_file()
    assert len((tmp_path / "ev" / "folds.jsonl").read_text().splitlines()) == 2 * 4
