"""Where a search keeps its Optuna study: an RDB storage (SQLite by default), and warm starts from earlier studies.

Optuna's default in-memory storage lives and dies with the Ray driver: a crashed or
interrupted search loses what TPE had learned, and nothing else can look at it while
it runs. A database fixes both. The study survives the driver, so a restarted search
(or a later one, through ``warm_start``) continues from the trials already paid for;
many readers can open it at once, among them ``optuna-dashboard <url>`` to watch a
search live in a browser; and on a cluster the same code points at a PostgreSQL or
MySQL server that every node can reach, where a SQLite file would sit on one disk.

Pure optuna + stdlib: no Ray here, so the driver, the offline tools and the tests
share it without starting a cluster.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

DEFAULT_DB_NAME = "optuna.db"
# The back-ends RDBStorage is tested against by Optuna, each with an optional SQLAlchemy driver ("+psycopg2").
_URL_PATTERN = re.compile(r"^(sqlite|postgresql|mysql)(\+[A-Za-z0-9_]+)?://")
ACCEPTED_FORMS = "sqlite:///PATH, postgresql[+DRIVER]://USER:PASS@HOST/DB or mysql[+DRIVER]://USER:PASS@HOST/DB"
# A reader (optuna-dashboard, a second process) holds SQLite's lock for a moment; sqlite3's 5 s default
# wait turns a slow dashboard refresh into "database is locked" in the search driver, 30 s does not.
SQLITE_LOCK_TIMEOUT_S = 30
# The package that provides each SQLAlchemy driver, for the message when it is missing.
_DRIVER_PACKAGES = {
    "postgresql": "psycopg2-binary",
    "postgresql+psycopg2": "psycopg2-binary",
    "postgresql+psycopg": "psycopg[binary]",
    "postgresql+pg8000": "pg8000",
    "mysql": "mysqlclient",
    "mysql+mysqldb": "mysqlclient",
    "mysql+pymysql": "PyMySQL",
    "mysql+mysqlconnector": "mysql-connector-python",
}
# The states whose results a sampler learns from: a COMPLETE value, or a PRUNED trial's intermediate values.
COPIED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
WARM_START_ATTR = "warm_started_from"


def storage_url(storage: str | None, out: Path) -> str:
    """The study's storage URL: ``storage`` when it is a database URL, else a SQLite file in ``out``."""
    if not storage:
        # Absolute, so the URL means the same file whatever the working directory of the process reading it.
        return f"sqlite:///{(Path(out) / DEFAULT_DB_NAME).resolve()}"
    if _URL_PATTERN.match(storage):
        return storage
    hint = ""
    if "://" not in storage:  # a bare path: the likeliest mistake, so say how to write it
        hint = f" (for a SQLite file write sqlite:///{Path(storage).resolve()})"
    raise ValueError(f"storage {storage!r} is not a database URL{hint}; accepted forms: {ACCEPTED_FORMS}")


def _scheme(url: str) -> str:
    return url.split("://", 1)[0]


def sqlite_path(url: str) -> Path | None:
    """The file a ``sqlite:///`` URL names, or None for another back-end or an in-memory database."""
    if _scheme(url).split("+")[0] != "sqlite":
        return None
    # sqlite:///rel.db and sqlite:////abs.db: the third slash ends the (empty) host, the rest is the path.
    path = url.split("://", 1)[1].split("?", 1)[0]
    path = path[1:] if path.startswith("/") else path
    return None if path in ("", ":memory:") else Path(path)


def open_storage(url: str) -> RDBStorage:
    """An RDBStorage on ``url``, creating a SQLite file's folder; a missing driver names what to install."""
    engine_kwargs: dict[str, Any] = {}
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_LOCK_TIMEOUT_S}
    try:
        return RDBStorage(url, engine_kwargs=engine_kwargs)
    except ImportError as e:
        scheme = _scheme(url)
        package = _DRIVER_PACKAGES.get(scheme)
        fix = f"pip install {package}" if package else "install the SQLAlchemy driver it names"
        raise ImportError(f"storage URL scheme {scheme!r} needs a database driver that is not installed: {fix}") from e


def study_name(experiment_name: str) -> str:
    """The study's name in the storage: one database can hold the studies of many experiments."""
    return f"patchray-{experiment_name}"


def _compatible(value: Any, old: BaseDistribution, new: BaseDistribution) -> bool:
    """Whether a value sampled from ``old`` is a value ``new`` could have sampled."""
    kinds = (FloatDistribution, IntDistribution, CategoricalDistribution)
    if not any(isinstance(old, kind) and isinstance(new, kind) for kind in kinds):
        return False  # an int range turned into a choice (or back) models another parameter
    try:
        # the very test create_trial applies to a trial's parameters, so what passes here is accepted there
        return new._contains(new.to_internal_repr(value))
    except ValueError:  # a choice the new distribution lacks
        return False


def _copyable(trial: FrozenTrial, distributions: dict[str, BaseDistribution]) -> bool:
    # A subset of the parameters is fine: TPE's group mode models conditional parameters trial by trial.
    return all(name in distributions and _compatible(value, trial.distributions[name], distributions[name])
               for name, value in trial.params.items())


def _origin(from_study_name: str, trial: FrozenTrial) -> str:
    return f"{from_study_name}#{trial.number}"


def _copy(trial: FrozenTrial, from_study_name: str, distributions: dict[str, BaseDistribution]) -> FrozenTrial:
    return optuna.trial.create_trial(
        state=trial.state,
        values=trial.values,  # a PRUNED trial carries its last intermediate value, as Optuna records it
        params=trial.params,
        # the new distributions, so that the study's search space is one space and TPE models it jointly
        distributions={name: distributions[name] for name in trial.params},
        user_attrs={**trial.user_attrs, WARM_START_ATTR: _origin(from_study_name, trial)},
        intermediate_values=trial.intermediate_values,
    )


def _check_direction(study: optuna.Study, direction: str, context: str) -> None:
    # The values of a minimised metric would rank backwards in a maximising study.
    directions = [d.name.lower() for d in study.directions]
    if directions != [direction.lower()]:
        raise ValueError(f"{context}: its directions are {directions}, the search {direction}s one metric")


def warm_start(storage: BaseStorage | str, new_study_name: str, from_study_name: str,
               distributions: dict[str, BaseDistribution], direction: str = "maximize") -> int:
    """Copy the finished trials of ``from_study_name`` whose parameters fit ``distributions`` into
    ``new_study_name`` (created if missing); returns how many were copied.

    Trials copied by an earlier call are not copied again, so a restarted search can warm-start
    with the same arguments without doubling its history.
    """
    names = optuna.study.get_all_study_names(storage)
    if from_study_name not in names:
        raise ValueError(f"cannot warm-start study {new_study_name!r} from {from_study_name!r}: "
                         f"no study of that name in the storage (it has: {', '.join(names) or 'none'})")
    if from_study_name == new_study_name:
        raise ValueError(f"cannot warm-start study {new_study_name!r} from itself")
    source = optuna.load_study(study_name=from_study_name, storage=storage)
    _check_direction(source, direction, f"cannot warm-start from study {from_study_name!r}")
    target = optuna.create_study(storage=storage, study_name=new_study_name, direction=direction,
                                 load_if_exists=True)
    _check_direction(target, direction, f"cannot warm-start study {new_study_name!r}")
    done = {t.user_attrs.get(WARM_START_ATTR) for t in target.get_trials(deepcopy=False)}
    copies = [_copy(t, from_study_name, distributions)
              for t in source.get_trials(deepcopy=False, states=COPIED_STATES)
              if _copyable(t, distributions) and _origin(from_study_name, t) not in done]
    target.add_trials(copies)
    return len(copies)


def study_summary(storage: BaseStorage | str, name: str) -> dict[str, Any]:
    """Trials by state and the best value so far, for a log line."""
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if completed and len(study.directions) == 1 else None
    return {
        "study": name,
        "trials": len(trials),
        "states": dict(sorted(states.items())),
        "best_value": None if best is None else best.value,
        "best_trial": None if best is None else best.number,
    }
