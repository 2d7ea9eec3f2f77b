-- Which selections agree: shared members and Jaccard index per pair.
SELECT * FROM selection_overlap LIMIT 20;
