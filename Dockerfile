FROM python:3.11-slim
WORKDIR /srv
RUN pip install --no-cache-dir "uv==0.13.9"
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project
COPY app ./app
COPY graphs ./graphs
ENV PATH="/srv/.venv/bin:$PATH" PYTHONUNBUFFERED=1
EXPOSE 8000
CMD ["python", "-m", "uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000"]
