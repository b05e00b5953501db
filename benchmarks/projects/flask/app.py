"""A small Flask app: the benchmark's "edit one source file" touches this file."""

import os

from dotenv import load_dotenv
from flask import Flask, jsonify, render_template

load_dotenv()
app = Flask(__name__)
NOTES = {1: "buy milk", 2: "write the benchmark"}


@app.get("/")
def index():
    return render_template("index.html", notes=NOTES, name=os.environ.get("APP_NAME", "notes"))


@app.get("/api/notes")
def notes():
    return jsonify(NOTES)


@app.get("/healthz")
def healthz():
    return "ok\n"


if __name__ == "__main__":
    app.run(host="0.0.0.0", port=8000)
