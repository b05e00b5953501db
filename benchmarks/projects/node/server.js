// A small express app: the benchmark's "edit one source file" touches this file.
const express = require("express");
const dayjs = require("dayjs");

const app = express();
const notes = new Map([[1, "buy milk"], [2, "write the benchmark"]]);

app.get("/api/notes", (req, res) => res.json(Object.fromEntries(notes)));
app.get("/healthz", (req, res) => res.send("ok\n"));
app.get("/", (req, res) => res.send(`<h1>notes</h1><p>${dayjs().format("YYYY-MM-DD")}</p>`));

app.listen(process.env.PORT || 3000, () => console.log("listening"));
