"""The sync app: ``def`` endpoints on a sync SQLAlchemy engine (psycopg 3), session per request.

FastAPI runs ``def`` endpoints and ``def`` dependencies in anyio's worker threads (a
limiter of 40 by default), so each request holds a thread while it waits on PostgreSQL.
"""

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from async_vs_sync.common import (
    MAX_OVERFLOW,
    POOL_SIZE,
    POOL_TIMEOUT_SECONDS,
    Item,
    ItemIn,
    ItemOut,
    database_url,
    new_item,
)

engine = create_engine(
    database_url(),
    pool_size=POOL_SIZE,
    max_overflow=MAX_OVERFLOW,
    pool_timeout=POOL_TIMEOUT_SECONDS,
)
sessions = sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    engine.dispose()


app = FastAPI(lifespan=lifespan)


def get_session() -> Iterator[Session]:
    with sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


@app.post("/items", status_code=201)
def create_item(body: ItemIn, session: SessionDep) -> ItemOut:
    item = new_item(body)
    session.add(item)
    session.commit()
    return ItemOut.model_validate(item)


@app.get("/items/{item_id}")
def read_item(item_id: uuid.UUID, session: SessionDep) -> ItemOut:
    item = session.get(Item, item_id)
    if item is None:
        raise HTTPException(status_code=404, detail="item not found")
    return ItemOut.model_validate(item)
