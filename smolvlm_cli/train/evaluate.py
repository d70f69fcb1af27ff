# Periodic eval with the eval package: rank 0 writes the step's merged model, every rank loads it and answers its
# share of the items, rank 0 scores them all and keeps the model in RUN/best/ if it is among the best K.
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import UserError
from ..recipe_eval import USER_TASK


def eval_inputs(recipe) -> tuple[dict, dict]:
    """(dataset_paths, media_roots) of the recipe's eval section, keyed as `smolvlm eval`'s flags: the synthetic
    tasks read the recipe's synthetic set unless the section names a folder of its own."""
    from ..data.resolve import synthetic_root
    from ..eval.tasks import registry, resolve_tasks

    s = recipe.eval
    paths = {k: Path(v) for k, v in s.dataset_paths.items()}
    if s.tasks and any(registry()[n].family == "synthetic" for n in resolve_tasks(s.tasks)):
        paths = {"synthetic": synthetic_root(recipe.synthetic), **paths}
    return paths, {k: Path(v) for k, v in s.media_roots.items()}


class Evaluator:
    def __init__(self, recipe, run: Path):
        from ..eval.runner import check_inputs
        from . import checkpoint as ckpt

        self.settings = s = recipe.eval
        self.every = s.every_steps or recipe.train.checkpoint_every
        self.run = Path(run)
        self.user_sources = []
        error = None
        try:  # the data and media folders, checked when the phase starts rather than at its first eval
            self.dataset_paths, self.media_roots = eval_inputs(recipe)
            if s.tasks:
                check_inputs(s.tasks, self.dataset_paths, self.media_roots, s.prompt_style, s.limit, s.batch_size,
                             None)
            if s.data:
                from ..eval.user_data import check_user_data

                self.user_sources = check_user_data(s.data)
        except UserError as e:
            error = e
        ckpt.agree(error, signals=False)  # every rank builds its Evaluator at the same point

    def __call__(self, engine, job, step: int) -> float | None:
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        from ..eval.runner import load_model
        from . import checkpoint as ckpt
        from .consolidate import merged_model, record_video_sampling, write_model_folder
        from .launch import barrier

        name = f"{job.stage}-phase{job.index}-step{step:08d}"
        model_dir = self.run / "evals" / name
        state = ckpt.gather_state_dict(engine, job.dist.rank)
        error = None
        if job.dist.main:
            try:
                write_model_folder(merged_model(state, job.start_dir, job.phase), job.start_dir, model_dir,
                                   extra=record_video_sampling(job.phase, job.recipe.images))
            except UserError as e:
                error = e
        del state
        ckpt.agree(error, signals=False)  # also the barrier: the folder is complete (a shared filesystem)
        unset_hf_deepspeed_config()  # a plain model on every rank, never a zero.Init-partitioned one
        model, processor = load_model(model_dir, str(engine.device))
        results = self._evaluate(model, processor, model_dir, (job.dist.rank, job.dist.world_size))
        del model
        score = self._record(job, step, name, model_dir, results) if job.dist.main else None
        barrier()
        return score

    def _evaluate(self, model, processor, model_dir: Path, shard: tuple[int, int]) -> dict | None:
        """The benchmark tasks, then the held-out data (eval.data); rank 0 returns the results, the others None."""
        from ..eval.runner import evaluate
        from ..eval.user_data import PREDICTIONS, evaluate_user_data

        s, out = self.settings, model_dir / "eval_results.json"
        results = {"model": str(model_dir), "tasks": {}} if shard[0] == 0 else None
        if s.tasks:
            results = evaluate(model, processor, s.tasks, limit=s.limit, batch_size=s.batch_size, out=out,
                               dataset_paths=self.dataset_paths, media_roots=self.media_roots,
                               prompt_style=s.prompt_style, progress=False, model_name=str(model_dir), shard=shard)
        if s.data:
            summary = evaluate_user_data(model, processor, self.user_sources, s, shard=shard,
                                         predictions=model_dir / PREDICTIONS)
            if results is not None:
                results["tasks"][USER_TASK] = summary
                scores = {t: r["score"] for t, r in results["tasks"].items()}
                results["composite"] = {"score": self._composite(scores), "weights": self._weights(scores)}
                tmp = out.with_name(out.name + ".tmp")
                tmp.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
                tmp.replace(out)
        return results

    def _weights(self, scores: dict) -> dict:
        """The recipe's eval.weights; by default the benchmarks' own, held-out data weighing as one of them."""
        from ..eval.tasks import composite_weights
        from ..eval.user_data import data_weights

        if self.settings.weights is None and self.settings.data:
            return data_weights(scores)
        return composite_weights(scores, self.settings.weights)

    def _composite(self, scores: dict) -> float | None:
        from ..eval.tasks import composite

        return composite(scores, self._weights(scores))

    def _record(self, job, step: int, name: str, model_dir: Path, results: dict) -> float:
        scores = {t: r["score"] for t, r in results["tasks"].items()}
        score = self._composite(scores)
        job.log.eval({"stage": job.stage, "phase": job.phase.name, "step": step, "eval": scores, "composite": score})
        ranks = f" on {job.dist.world_size} ranks" if job.dist.world_size > 1 else ""
        job.log.info(f"eval at step {step}{ranks}: " + ", ".join(f"{t} {v:.3f}" for t, v in scores.items())
                     + f" | composite {score:.3f}")
        self._keep_best(model_dir, name, score, scores)
        return score

    def _keep_best(self, model_dir: Path, name: str, score: float, scores: dict) -> None:
        """RUN/best/ holds the K best evaluated models; RUN/best/best.json lists them, best first."""
        best = self.run / "best"
        best.mkdir(parents=True, exist_ok=True)
        index_file = best / "best.json"
        entries = json.loads(index_file.read_text()) if index_file.is_file() else []
        entries.append({"name": name, "composite": score, "scores": scores})
        entries.sort(key=lambda e: -e["composite"])
        keep, drop = entries[: self.settings.keep_best], entries[self.settings.keep_best:]
        if any(e["name"] == name for e in keep):
            shutil.move(str(model_dir), best / name)
        else:
            shutil.rmtree(model_dir, ignore_errors=True)
        for e in drop:
            shutil.rmtree(best / e["name"], ignore_errors=True)
        tmp = index_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(keep, indent=2))
        tmp.replace(index_file)


def make_evaluator(recipe, job):
    return Evaluator(recipe, job.run) if recipe.eval is not None else None
