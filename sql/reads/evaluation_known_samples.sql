-- Every sample the pipeline has ever ingested (active or not): a general held-out set avoids them.
SELECT sample_id FROM samples;
