"""stream-ecg: streaming ECG arrhythmia classification and abnormal-beat localisation."""

__version__ = "0.1.0"
