"""The human rating page: raters compare two sample videos per pair and their answers become
preference vote files that the `preference_votes` asset ingests.

- `tasks`: the task list (`rating_tasks`' JSON: pairs of sample videos, each named by the
  exact model `asset@data_version`), loaded and validated; the only files the page serves.
- `raters`: rater ids and their secret links, issued by an admin (`svd-dag rating add-rater`).
- `records`: one immutable decision record per answer (rating state folder) and, for a
  pair that is not a gold pair, one immutable vote file (votes root), each created once.
- `state`: what the server keeps in memory: the pairs' order and layout per rater, who
  decided what, the write of a decision with retries refused.
- `stats`: the admin page's numbers (agreement with gold pairs, left-choice rate, time per
  decision, votes per model) and the export.
- `media`: video and image bytes with HTTP Range support (Chromium seeks mp4s by range).
- `app`: the FastAPI app; `server`: uvicorn (`serve`) and a subprocess handle (`RatingServer`);
  `cli`: `svd-dag rating ...`.

Nothing here opens the catalog or imports torch: the page runs on a small machine with the
task list, the votes root and the rating state folder only.
"""
