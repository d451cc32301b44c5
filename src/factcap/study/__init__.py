"""Human studies: people compare two captions of an image and say which is better.

``factcap study create`` builds a study directory from captioning results (:mod:`.build`, with
the balanced design of :mod:`.design`); :mod:`.store` is the one API to its SQLite database;
``factcap study serve`` serves the rater page (:mod:`.server`); :mod:`.crowd` writes and reads
the CSV files of Mechanical Turk and Prolific; :mod:`.results` turns the votes into win rates
with bootstrap intervals, Bradley–Terry strengths and Krippendorff's alpha.
"""
