"""The async app: ``async def`` endpoints on SQLAlchemy's async engine (psycopg 3's async
connections), AsyncSession per request; everything runs on the event loop.
"""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

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

engine = create_async_engine(
    database_url(),
    pool_size=POOL_SIZE,
    max_overflow=MAX_OVERFLOW,
    pool_timeout=POOL_TIMEOUT_SECONDS,
)
sessions = async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


async def get_session() -> AsyncIterator[AsyncSession]:
    async with sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


@app.post("/items", status_code=201)
async def create_item(body: ItemIn, session: SessionDep) -> ItemOut:
    item = new_item(body)
    session.add(item)
    await session.commit()
    return ItemOut.model_validate(item)


@app.get("/items/{item_id}")
async def read_item(item_id: uuid.UUID, session: SessionDep) -> ItemOut:
    item = await session.get(Item, item_id)
    if item is None:
        raise HTTPException(status_code=404, detail="item not found")
    return ItemOut.model_validate(item)
