DROP TABLE adjustments;
DROP TABLE credentials;
DROP TABLE agents;
DROP TABLE service_points;
DROP TABLE merchants;
DROP TABLE cards;
DROP TABLE holders;
